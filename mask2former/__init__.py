"""Mask2Former as a detectron2 extension. Importing it registers every component."""
from . import modeling
from .config import add_maskformer2_config
