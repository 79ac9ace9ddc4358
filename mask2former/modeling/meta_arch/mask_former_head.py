"""The segmentation head: a pixel decoder followed by a transformer decoder ("predictor")."""
from typing import Dict, Optional

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..pixel_decoder.registry import build_pixel_decoder
from ..transformer_decoder.registry import build_transformer_decoder

# Which pixel-decoder output feeds the transformer decoder (MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE),
# besides the name of a backbone feature.
MULTI_SCALE_PIXEL_DECODER = "multi_scale_pixel_decoder"
TRANSFORMER_ENCODER = "transformer_encoder"
PIXEL_EMBEDDING = "pixel_embedding"


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
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        Args:
            input_shape: shapes of the backbone features the head uses.
            num_classes: number of classes to predict (without the no-object class).
            pixel_decoder: the pixel decoder module.
            loss_weight, ignore_value: kept for configuration compatibility.
            transformer_predictor: the transformer decoder module.
            transformer_in_feature: input of the transformer decoder (see the constants above).
        """
        super().__init__()
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if in_feature in (TRANSFORMER_ENCODER, MULTI_SCALE_PIXEL_DECODER):
            predictor_in_channels = cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM
        elif in_feature == PIXEL_EMBEDDING:
            predictor_in_channels = cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
        elif in_feature in input_shape:
            predictor_in_channels = input_shape[in_feature].channels
        else:
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={in_feature!r} is neither one of "
                f"{[MULTI_SCALE_PIXEL_DECODER, TRANSFORMER_ENCODER, PIXEL_EMBEDDING]} nor a backbone "
                f"feature ({sorted(input_shape)})"
            )
        return {
            "input_shape": {
                k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
            },
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "transformer_in_feature": in_feature,
            "transformer_predictor": build_transformer_decoder(
                cfg, predictor_in_channels, mask_classification=True
            ),
        }

    def forward(self, features: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None):
        """
        Args:
            features: backbone features by name, each (B, C_l, H_l, W_l).
        Returns:
            the transformer decoder's predictions: "pred_logits" (B, Q, K + 1), "pred_masks"
            (B, Q, H/4, W/4) and "aux_outputs".
        """
        mask_features, transformer_encoder_features, multi_scale_features = (
            self.pixel_decoder.forward_features(features)
        )
        if self.transformer_in_feature == MULTI_SCALE_PIXEL_DECODER:
            return self.predictor(multi_scale_features, mask_features, mask)
        if self.transformer_in_feature == TRANSFORMER_ENCODER:
            if transformer_encoder_features is None:
                raise ValueError(
                    "TRANSFORMER_IN_FEATURE='transformer_encoder' needs a pixel decoder with a "
                    "transformer encoder"
                )
            return self.predictor(transformer_encoder_features, mask_features, mask)
        if self.transformer_in_feature == PIXEL_EMBEDDING:
            return self.predictor(mask_features, mask_features, mask)
        return self.predictor(features[self.transformer_in_feature], mask_features, mask)
