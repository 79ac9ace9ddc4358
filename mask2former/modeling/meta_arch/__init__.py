from .mask_former_head import MaskFormerHead
from .maskformer import MaskFormer
from .per_pixel_baseline import PerPixelBaselineHead, PerPixelBaselinePlusHead
