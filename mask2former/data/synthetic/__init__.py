"""A built-in synthetic segmentation dataset: shapes on textured stuff, in real COCO formats."""

from .generator import (
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    GENERATOR_VERSION,
    IMAGE_SIZE,
    ensure_synthetic_dataset,
    generate_synthetic_dataset,
    synthetic_dir,
)
from .metadata import load_synthetic_categories, synthetic_metadata
from .register import load_synthetic_panoptic, register_all_synthetic

__all__ = [k for k in globals().keys() if not k.startswith("_")]
