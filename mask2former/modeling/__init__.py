from .backbone.swin import D2SwinTransformer
from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .meta_arch import MaskFormer, MaskFormerHead, PerPixelBaselineHead, PerPixelBaselinePlusHead
from .pixel_decoder import (
    BasePixelDecoder,
    MSDeformAttnPixelDecoder,
    TransformerEncoderPixelDecoder,
    build_pixel_decoder,
)
from .transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    StandardTransformerDecoder,
    build_transformer_decoder,
)
