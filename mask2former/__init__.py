"""Mask2Former as a detectron2 extension. Importing it registers every component."""
from . import data, modeling  # noqa: F401  (registers datasets and model components)
from .config import add_maskformer2_config
from .test_time_augmentation import SemanticSegmentorWithTTA

__all__ = ["add_maskformer2_config", "SemanticSegmentorWithTTA"]
