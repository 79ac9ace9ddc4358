"""
Mask2Former for video instance segmentation, as a detectron2 extension. Importing it registers
the video meta-architecture, its transformer decoder and the YouTube-VIS datasets.

The top-level names are those of the original ``mask2former_video`` package.
"""
import mask2former  # noqa: F401  (the image components the video model is built from)

from .config import add_maskformer2_video_config

__all__ = ["add_maskformer2_video_config"]
