"""
Mask2Former for video instance segmentation, as a detectron2 extension. Importing it registers
the video meta-architecture, its transformer decoder and the video datasets (YouTube-VIS 2019
and 2021, the synthetic video dataset).

The top-level names are those of the original ``mask2former_video`` package.
"""
import mask2former  # noqa: F401  (the image components the video model is built from)

from . import modeling  # noqa: F401  (registers the video transformer decoder)
from .config import add_maskformer2_video_config
from .data_video import (  # noqa: F401  (importing data_video registers the video datasets)
    CocoClipDatasetMapper,
    YTVISDatasetMapper,
    YTVISEvaluator,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from .video_maskformer_model import VideoMaskFormer

__all__ = [
    "add_maskformer2_video_config",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "get_detection_dataset_dicts",
    "modeling",
    "CocoClipDatasetMapper",
    "VideoMaskFormer",
    "YTVISDatasetMapper",
    "YTVISEvaluator",
]
