"""The original implementation's module path of the meta-architecture (``mask2former.maskformer_model``)."""
from .modeling.meta_arch.maskformer import MaskFormer

__all__ = ["MaskFormer"]
