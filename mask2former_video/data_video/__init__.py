"""
Video data: YouTube-VIS registration and loading, clip mappers, loaders, and the synthetic
video dataset. Importing this package registers the video datasets (datasets/builtin.py).
"""
from . import datasets  # noqa: F401  (registers the datasets)
from .build import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from .dataset_mapper import CocoClipDatasetMapper, YTVISDatasetMapper

from .ytvis_eval import YTVISEvaluator

__all__ = [
    "build_detection_test_loader",
    "build_detection_train_loader",
    "get_detection_dataset_dicts",
    "CocoClipDatasetMapper",
    "YTVISDatasetMapper",
    "YTVISEvaluator",
]
