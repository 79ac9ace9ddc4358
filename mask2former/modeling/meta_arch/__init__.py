from .mask_former_head import MaskFormerHead
from .maskformer import MaskFormer
