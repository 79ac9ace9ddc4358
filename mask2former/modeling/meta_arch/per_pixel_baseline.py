"""
The per-pixel classification baselines of the MaskFormer paper (Cheng et al., NeurIPS 2021),
as heads of detectron2's ``SemanticSegmentor``: a pixel decoder followed by a 1x1 classifier
(``PerPixelBaselineHead``) or by a transformer decoder with one query per class
(``PerPixelBaselinePlusHead``), trained with a per-pixel cross-entropy.
"""
from typing import Dict, List, Optional, Tuple

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..pixel_decoder.fpn import build_pixel_decoder
from ..transformer_decoder.maskformer_transformer_decoder import build_transformer_decoder
from .mask_former_head import transformer_in_channels, transformer_input


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselineHead(nn.Module):
    """A pixel decoder and a 1x1 conv (``predictor``) giving per-pixel class logits at stride 4."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
    ):
        """
        Args:
            input_shape: shapes of the backbone features the head uses.
            num_classes: number of classes K.
            pixel_decoder: the pixel decoder; its ``mask_dim`` is the classifier's input width.
            loss_weight: weight of the cross-entropy loss.
            ignore_value: label of pixels without a class (no loss there).
        """
        super().__init__()
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]
        self.ignore_value = ignore_value
        # the pixel decoders' mask features are at 1/4 of the input resolution
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = Conv2d(pixel_decoder.mask_dim, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
        }

    def forward(
        self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
    ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """
        detectron2's semantic-segmentation head contract.

        Args:
            features: backbone features by name, each (B, C_l, H_l, W_l).
            targets: (B, H, W) int64 labels at the input resolution (training only).
        Returns:
            in training (None, {"loss_sem_seg": ...}); in inference ((B, K, H, W) logits at the
            input resolution, {}).
        """
        x, aux = self.layers(features)
        if self.training:
            losses = {"loss_sem_seg": self.loss(x, targets)}
            for i, aux_logits in enumerate(aux):
                losses[f"loss_sem_seg_{i}"] = self.loss(aux_logits, targets)
            return None, losses
        return self.upsample(x), {}

    def layers(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(B, K, H/4, W/4) class logits and a list of earlier predictions (none here)."""
        mask_features, _, _ = self.pixel_decoder.forward_features(features)
        return self.predictor(mask_features), []

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, H/4, W/4) -> (B, K, H, W), bilinear."""
        return F.interpolate(x, scale_factor=self.common_stride, mode="bilinear", align_corners=False)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Weighted mean cross-entropy of (B, K, H/4, W/4) logits, upsampled in fp32, against
        (B, H, W) labels, ignoring ``ignore_value``."""
        loss = F.cross_entropy(
            self.upsample(logits.float()), targets, reduction="mean", ignore_index=self.ignore_value
        )
        return loss * self.loss_weight


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselinePlusHead(PerPixelBaselineHead):
    """
    The per-pixel baseline with a transformer decoder as classifier (``predictor``): one query
    per class, whose mask logits are that class's per-pixel logits. With deep supervision every
    decoder layer's prediction gets its own loss ``loss_sem_seg_i``.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_in_feature: str,
        transformer_predictor: nn.Module,
        deep_supervision: bool,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
    ):
        """
        Args:
            transformer_in_feature: input of the transformer decoder (see mask_former_head).
            transformer_predictor: a transformer decoder without mask classification.
            deep_supervision: also compute a loss on every earlier decoder layer's prediction.
            others: as :class:`PerPixelBaselineHead`.
        """
        super().__init__(
            input_shape, num_classes=num_classes, pixel_decoder=pixel_decoder,
            loss_weight=loss_weight, ignore_value=ignore_value,
        )
        # the 1x1 classifier is replaced: the reference's checkpoints name the decoder "predictor"
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.deep_supervision = deep_supervision

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        mf = cfg.MODEL.MASK_FORMER
        if mf.NUM_OBJECT_QUERIES != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise ValueError(
                f"{cls.__name__} predicts one mask per class: MODEL.MASK_FORMER.NUM_OBJECT_QUERIES "
                f"({mf.NUM_OBJECT_QUERIES}) must equal MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                f"({cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES})"
            )
        ret = super().from_config(cfg, input_shape)
        ret["transformer_in_feature"] = mf.TRANSFORMER_IN_FEATURE
        ret["transformer_predictor"] = build_transformer_decoder(
            cfg, transformer_in_channels(cfg, input_shape), mask_classification=False
        )
        ret["deep_supervision"] = mf.DEEP_SUPERVISION
        return ret

    def layers(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(B, K, H/4, W/4) class logits of the last decoder layer, and those of the earlier
        layers when deep supervision is on."""
        mask_features, transformer_encoder_features, multi_scale_features = (
            self.pixel_decoder.forward_features(features)
        )
        x = transformer_input(
            self.transformer_in_feature, features, mask_features, transformer_encoder_features,
            multi_scale_features,
        )
        predictions = self.predictor(x, mask_features)
        aux = [p["pred_masks"] for p in predictions.get("aux_outputs", [])] if self.deep_supervision else []
        return predictions["pred_masks"], aux
