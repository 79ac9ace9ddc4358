"""Registry of pixel decoders: modules turning backbone features into per-pixel mask features."""
from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """
Pixel decoders of MaskFormer / Mask2Former, selected by ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``.
Each is built as ``cls(cfg, input_shape)`` and implements ``forward_features(features)`` returning
``(mask_features (B, MASK_DIM, H/4, W/4), transformer_encoder_features or None,
multi_scale_features: list of 3 maps, lowest resolution first)``.
"""


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]):
    """Build the pixel decoder named by ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name not in PIXEL_DECODER_REGISTRY:
        known = ", ".join(sorted(k for k, _ in PIXEL_DECODER_REGISTRY))
        raise KeyError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME: unknown pixel decoder {name!r}; known: {known}"
        )
    model = PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(f"Pixel decoder {name} must implement forward_features(features)")
    return model
