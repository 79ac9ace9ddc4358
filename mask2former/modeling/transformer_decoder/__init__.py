"""Transformer decoders (MaskFormer's and Mask2Former's) and their registry."""
from .mask2former_transformer_decoder import MultiScaleMaskedTransformerDecoder
from .maskformer_transformer_decoder import StandardTransformerDecoder
from .position_encoding import PositionEmbeddingSine
from .registry import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "build_transformer_decoder",
    "MultiScaleMaskedTransformerDecoder",
    "StandardTransformerDecoder",
    "PositionEmbeddingSine",
]
