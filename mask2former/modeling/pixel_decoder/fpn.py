"""FPN-style pixel decoder (MaskFormer's ``BasePixelDecoder``)."""
from typing import Callable, Dict, List, Optional, Tuple, Union

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm

from .registry import PIXEL_DECODER_REGISTRY

# Mask2Former's transformer decoder attends to three feature levels.
NUM_MULTI_SCALE_LEVELS = 3


def fpn_lateral_and_output_convs(in_channels: int, conv_dim: int, norm: str) -> Tuple[Conv2d, Conv2d]:
    """
    One FPN level: a 1x1 lateral conv (in_channels -> conv_dim) and a 3x3 output conv with ReLU
    (conv_dim -> conv_dim), both xavier-initialised; biases only when there is no norm.
    """
    use_bias = norm == ""
    lateral_conv = Conv2d(
        in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim)
    )
    output_conv = Conv2d(
        conv_dim, conv_dim, kernel_size=3, stride=1, padding=1, bias=use_bias,
        norm=get_norm(norm, conv_dim), activation=F.relu,
    )
    weight_init.c2_xavier_fill(lateral_conv)
    weight_init.c2_xavier_fill(output_conv)
    return lateral_conv, output_conv


@PIXEL_DECODER_REGISTRY.register()
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

        lateral_convs = []
        output_convs = []
        use_bias = norm == ""
        for idx, in_channels in enumerate(feature_channels):
            if idx == len(self.in_features) - 1:
                output_conv = Conv2d(
                    in_channels, conv_dim, kernel_size=3, stride=1, padding=1, bias=use_bias,
                    norm=get_norm(norm, conv_dim), activation=F.relu,
                )
                weight_init.c2_xavier_fill(output_conv)
                self.add_module("layer_{}".format(idx + 1), output_conv)
                lateral_convs.append(None)
                output_convs.append(output_conv)
            else:
                lateral_conv, output_conv = fpn_lateral_and_output_convs(in_channels, conv_dim, norm)
                self.add_module("adapter_{}".format(idx + 1), lateral_conv)
                self.add_module("layer_{}".format(idx + 1), output_conv)
                lateral_convs.append(lateral_conv)
                output_convs.append(output_conv)
        # Top-down order: coarsest first.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {
            "input_shape": {
                k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
            },
            "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
        }

    def forward_features(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            features: backbone features by name, each (B, C_l, H_l, W_l).
        Returns:
            mask features (B, mask_dim, H_1, W_1) at the finest level, None (no encoder), and
            the first three FPN outputs (B, conv_dim, H_l, W_l), coarsest first.
        """
        multi_scale_features = []
        y = None
        for f, lateral_conv, output_conv in zip(
            self.in_features[::-1], self.lateral_convs, self.output_convs
        ):
            x = features[f]
            if lateral_conv is None:
                y = output_conv(x)
            else:
                cur_fpn = lateral_conv(x)
                y = cur_fpn + F.interpolate(y, size=cur_fpn.shape[-2:], mode="nearest")
                y = output_conv(y)
            if len(multi_scale_features) < NUM_MULTI_SCALE_LEVELS:
                multi_scale_features.append(y)
        return self.mask_features(y), None, multi_scale_features

    def forward(self, features):
        raise NotImplementedError("Pixel decoders are called through forward_features(features)")
