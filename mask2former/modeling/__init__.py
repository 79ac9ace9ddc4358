from .backbone.swin import D2SwinTransformer
from .criterion import SetCriterion
from .matcher import HungarianMatcher
from .meta_arch import MaskFormer, MaskFormerHead
from .pixel_decoder import PIXEL_DECODER_REGISTRY, BasePixelDecoder, MSDeformAttnPixelDecoder, build_pixel_decoder
from .transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    StandardTransformerDecoder,
    build_transformer_decoder,
)
