"""Video model components; importing registers the video transformer decoder."""
from .criterion import VideoSetCriterion
from .matcher import VideoHungarianMatcher
from .transformer_decoder import VideoMultiScaleMaskedTransformerDecoder

__all__ = ["VideoHungarianMatcher", "VideoSetCriterion", "VideoMultiScaleMaskedTransformerDecoder"]
