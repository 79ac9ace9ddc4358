"""The segmentation head: a pixel decoder followed by a transformer decoder ("predictor")."""
from typing import Dict, List, Optional

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..pixel_decoder.fpn import build_pixel_decoder
from ..transformer_decoder.maskformer_transformer_decoder import build_transformer_decoder

# Which pixel-decoder output feeds the transformer decoder (MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE),
# besides the name of a backbone feature.
MULTI_SCALE_PIXEL_DECODER = "multi_scale_pixel_decoder"
TRANSFORMER_ENCODER = "transformer_encoder"
PIXEL_EMBEDDING = "pixel_embedding"


def transformer_in_channels(cfg, input_shape: Dict[str, ShapeSpec]) -> int:
    """Channels of the transformer decoder's input named by MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE."""
    in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
    if in_feature in (TRANSFORMER_ENCODER, MULTI_SCALE_PIXEL_DECODER):
        return cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM
    if in_feature == PIXEL_EMBEDDING:
        return cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
    if in_feature in input_shape:
        return input_shape[in_feature].channels
    raise ValueError(
        f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={in_feature!r} is neither one of "
        f"{[MULTI_SCALE_PIXEL_DECODER, TRANSFORMER_ENCODER, PIXEL_EMBEDDING]} nor a backbone "
        f"feature ({sorted(input_shape)})"
    )


def transformer_input(
    in_feature: str,
    features: Dict[str, torch.Tensor],
    mask_features: torch.Tensor,
    transformer_encoder_features: Optional[torch.Tensor],
    multi_scale_features: List[torch.Tensor],
):
    """
    The transformer decoder's input named by ``in_feature`` (see the constants above): the
    multi-scale maps (a list), the encoder features, the mask features or a backbone feature,
    each (B, C, H, W).
    """
    if in_feature == MULTI_SCALE_PIXEL_DECODER:
        return multi_scale_features
    if in_feature == TRANSFORMER_ENCODER:
        if transformer_encoder_features is None:
            raise ValueError(
                "TRANSFORMER_IN_FEATURE='transformer_encoder' needs a pixel decoder with a "
                "transformer encoder"
            )
        return transformer_encoder_features
    if in_feature == PIXEL_EMBEDDING:
        return mask_features
    return features[in_feature]


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Runs the pixel decoder, then the transformer decoder on the feature it was configured with."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        Args:
            input_shape: shapes of the backbone features the head uses.
            num_classes: number of classes to predict (without the no-object class).
            pixel_decoder: the pixel decoder module.
            transformer_predictor: the transformer decoder module.
            transformer_in_feature: input of the transformer decoder (see the constants above).
        """
        super().__init__()
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {
            "input_shape": {
                k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
            },
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "transformer_in_feature": cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
            "transformer_predictor": build_transformer_decoder(
                cfg, transformer_in_channels(cfg, input_shape), mask_classification=True
            ),
        }

    def forward(self, features: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None):
        """
        Args:
            features: backbone features by name, each (B, C_l, H_l, W_l).
            mask: (B, H, W) bool padding mask passed on to the transformer decoder, or None.
        Returns:
            the transformer decoder's predictions: "pred_logits" (B, Q, K + 1), "pred_masks"
            (B, Q, H/4, W/4) and "aux_outputs".
        """
        mask_features, transformer_encoder_features, multi_scale_features = (
            self.pixel_decoder.forward_features(features)
        )
        x = transformer_input(
            self.transformer_in_feature, features, mask_features, transformer_encoder_features,
            multi_scale_features,
        )
        return self.predictor(x, mask_features, mask)
