"""A synthetic video dataset: moving, occluding shapes in YouTube-VIS format (see generator.py)."""
from .generator import (
    DEFAULT_NUM_FRAMES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    FRAME_SIZE,
    ensure_synthetic_video_dataset,
    generate_synthetic_video_dataset,
    split_paths,
    synthetic_video_dir,
)
from .register import load_synthetic_video, register_all_synthetic_video

__all__ = [k for k in globals().keys() if not k.startswith("_")]
