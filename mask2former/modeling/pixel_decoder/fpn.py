"""
MaskFormer's FPN-style pixel decoders (``BasePixelDecoder``, ``TransformerEncoderPixelDecoder``)
and the pixel-decoder builder.

Pixel decoders are registered in detectron2's ``SEM_SEG_HEADS_REGISTRY``, as in the reference
implementation, so that one registered there by other code works with our heads. Each is
built as ``cls(cfg, input_shape)`` and implements ``forward_features(features)`` returning
``(mask_features (B, MASK_DIM, H/4, W/4), transformer_encoder_features or None,
multi_scale_features: NUM_MULTI_SCALE_LEVELS maps, lowest resolution first)``.
"""
from typing import Callable, Dict, List, Optional, Tuple, Union

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ...utils.registry import lookup
from ..transformer_decoder.mask2former_transformer_decoder import NUM_MULTI_SCALE_LEVELS
from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from ..transformer_decoder.transformer import TransformerEncoderOnly

__all__ = [
    "BasePixelDecoder",
    "TransformerEncoderOnly",
    "TransformerEncoderPixelDecoder",
    "build_pixel_decoder",
    "add_fpn_levels",
]


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the pixel decoder named by ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``."""
    key = "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME"
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = lookup(SEM_SEG_HEADS_REGISTRY, name, key, "pixel decoder")(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"{key}: {name} is not a pixel decoder: it has no forward_features(features) method"
        )
    return model


def _output_conv(in_channels: int, conv_dim: int, norm: str) -> Conv2d:
    """A 3x3 conv with norm and ReLU, xavier-initialised; a bias only when there is no norm."""
    conv = Conv2d(
        in_channels, conv_dim, kernel_size=3, stride=1, padding=1, bias=norm == "",
        norm=get_norm(norm, conv_dim), activation=F.relu,
    )
    weight_init.c2_xavier_fill(conv)
    return conv


def add_fpn_levels(
    module: nn.Module, feature_channels: List[int], conv_dim: int, norm: str
) -> Tuple[List[Conv2d], List[Conv2d]]:
    """
    Adds to ``module`` one FPN level per entry of ``feature_channels`` (finest first): a 1x1
    lateral conv ``adapter_i`` (in_channels -> conv_dim) and a 3x3 output conv ``layer_i``
    with ReLU, i counting from 1.

    Returns:
        the lateral convs and the output convs, coarsest first (the top-down order).
    """
    lateral_convs, output_convs = [], []
    for idx, in_channels in enumerate(feature_channels):
        lateral_conv = Conv2d(
            in_channels, conv_dim, kernel_size=1, bias=norm == "", norm=get_norm(norm, conv_dim)
        )
        output_conv = Conv2d(
            conv_dim, conv_dim, kernel_size=3, stride=1, padding=1, bias=norm == "",
            norm=get_norm(norm, conv_dim), activation=F.relu,
        )
        weight_init.c2_xavier_fill(lateral_conv)
        weight_init.c2_xavier_fill(output_conv)
        module.add_module("adapter_{}".format(idx + 1), lateral_conv)
        module.add_module("layer_{}".format(idx + 1), output_conv)
        lateral_convs.append(lateral_conv)
        output_convs.append(output_conv)
    return lateral_convs[::-1], output_convs[::-1]


def _head_input_shape(cfg, input_shape: Dict[str, ShapeSpec]) -> Dict[str, ShapeSpec]:
    """The backbone features named by ``MODEL.SEM_SEG_HEAD.IN_FEATURES``."""
    return {k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES}


@SEM_SEG_HEADS_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """
    A top-down FPN over all input features: each level adds a 1x1 lateral of the backbone
    feature (``adapter_i``) to the upsampled coarser output, followed by a 3x3 conv
    (``layer_i``). The coarsest level has only the 3x3 conv.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
    ):
        """
        Args:
            input_shape: shapes (channels and stride) of the input features.
            conv_dim: number of channels of the intermediate convolutions.
            mask_dim: number of channels of the output mask features.
            norm: normalization of every conv, e.g. "GN".
        """
        super().__init__()
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]
        feature_channels = [v.channels for k, v in input_shape]

        lateral_convs, output_convs = add_fpn_levels(self, feature_channels[:-1], conv_dim, norm)
        coarsest_conv = _output_conv(
            self._coarsest_output_in_channels(feature_channels[-1], conv_dim), conv_dim, norm
        )
        self.add_module("layer_{}".format(len(self.in_features)), coarsest_conv)
        # Top-down order: coarsest first; the coarsest level has no lateral.
        self.lateral_convs = [None] + lateral_convs
        self.output_convs = [coarsest_conv] + output_convs

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {
            "input_shape": _head_input_shape(cfg, input_shape),
            "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
        }

    def _coarsest_output_in_channels(self, in_channels: int, conv_dim: int) -> int:
        """Input channels of the coarsest level's 3x3 conv: the backbone feature's here."""
        return in_channels

    def encode_coarsest(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """
        The coarsest backbone feature (B, C, h, w) as input to its 3x3 conv, and the transformer
        encoder features (None here: this decoder has no encoder).
        """
        return x, None

    def forward_features(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            features: backbone features by name, each (B, C_l, H_l, W_l).
        Returns:
            mask features (B, mask_dim, H_1, W_1) at the finest level, the transformer encoder
            features (see :meth:`encode_coarsest`), and the first NUM_MULTI_SCALE_LEVELS FPN
            outputs (B, conv_dim, H_l, W_l), coarsest first.
        """
        multi_scale_features = []
        encoder_features = None
        y = None
        for f, lateral_conv, output_conv in zip(
            self.in_features[::-1], self.lateral_convs, self.output_convs
        ):
            x = features[f]
            if lateral_conv is None:
                x, encoder_features = self.encode_coarsest(x)
                y = output_conv(x)
            else:
                cur_fpn = lateral_conv(x)
                y = cur_fpn + F.interpolate(y, size=cur_fpn.shape[-2:], mode="nearest")
                y = output_conv(y)
            if len(multi_scale_features) < NUM_MULTI_SCALE_LEVELS:
                multi_scale_features.append(y)
        return self.mask_features(y), encoder_features, multi_scale_features

    def forward(self, features):
        raise NotImplementedError("Pixel decoders are called through forward_features(features)")


@SEM_SEG_HEADS_REGISTRY.register()
class TransformerEncoderPixelDecoder(BasePixelDecoder):
    """
    MaskFormer's pixel decoder with a transformer encoder: the coarsest feature is projected
    to conv_dim (``input_proj``), refined by self-attention layers (``transformer``) with a
    sine position encoding (``pe_layer``), then goes through the FPN as in
    :class:`BasePixelDecoder`. The encoder output is the transformer-encoder feature.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        transformer_pre_norm: bool,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
    ):
        """
        Args:
            input_shape, conv_dim, mask_dim, norm: as :class:`BasePixelDecoder`.
            transformer_dropout, transformer_nheads, transformer_dim_feedforward: of the encoder.
            transformer_enc_layers: number of encoder layers.
            transformer_pre_norm: pre-norm instead of post-norm encoder layers.
        """
        super().__init__(input_shape, conv_dim=conv_dim, mask_dim=mask_dim, norm=norm)
        coarsest_channels = max(input_shape.values(), key=lambda s: s.stride).channels
        self.input_proj = Conv2d(coarsest_channels, conv_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.input_proj)
        self.transformer = TransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            normalize_before=transformer_pre_norm,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["transformer_dropout"] = cfg.MODEL.MASK_FORMER.DROPOUT
        ret["transformer_nheads"] = cfg.MODEL.MASK_FORMER.NHEADS
        ret["transformer_dim_feedforward"] = cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD
        ret["transformer_enc_layers"] = cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS
        ret["transformer_pre_norm"] = cfg.MODEL.MASK_FORMER.PRE_NORM
        return ret

    def _coarsest_output_in_channels(self, in_channels: int, conv_dim: int) -> int:
        """The coarsest 3x3 conv reads the encoder output (conv_dim channels)."""
        return conv_dim

    def encode_coarsest(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) coarsest feature -> the encoder output (B, conv_dim, h, w), twice: it is
        both the input of the coarsest 3x3 conv and the transformer-encoder feature."""
        encoded = self.transformer(self.input_proj(x), None, self.pe_layer(x))
        return encoded, encoded
