"""Transformer decoders (MaskFormer's and Mask2Former's) and their registry."""
from .mask2former_transformer_decoder import NUM_MULTI_SCALE_LEVELS, MultiScaleMaskedTransformerDecoder
from .maskformer_transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    StandardTransformerDecoder,
    build_transformer_decoder,
)
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "build_transformer_decoder",
    "MultiScaleMaskedTransformerDecoder",
    "NUM_MULTI_SCALE_LEVELS",
    "StandardTransformerDecoder",
    "PositionEmbeddingSine",
]
