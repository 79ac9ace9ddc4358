"""Mask2Former's pixel decoder: multi-scale deformable-attention encoder plus an FPN lateral."""
import copy
from typing import Callable, Dict, List, Optional, Tuple, Union

import fvcore.nn.weight_init as weight_init
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..transformer_decoder.mask2former_transformer_decoder import NUM_MULTI_SCALE_LEVELS
from ..transformer_decoder.layers import run_layer
from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from ..recompute import CheapRecompute
from .fpn import add_fpn_levels
from .ops.modules import MSDeformAttn

# The reference hard-codes the encoder's FFN width instead of reading DIM_FEEDFORWARD
# (which sizes the transformer decoder's FFN); published checkpoints depend on it.
ENCODER_DIM_FEEDFORWARD = 1024


def level_sizes(spatial_shapes: torch.Tensor) -> List[Tuple]:
    """(H_l, W_l) of each level of (L, 2) ``spatial_shapes``: Python ints, or 0-d tensors while
    tracing, so that an exported graph keeps the sizes dynamic instead of freezing them."""
    if torch.jit.is_tracing():
        return [tuple(row.unbind(0)) for row in spatial_shapes.unbind(0)]
    return [tuple(row) for row in spatial_shapes.tolist()]


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then an FFN; post-norm, sequence (B, S, C)."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        recompute: Optional[CheapRecompute] = None,
    ) -> torch.Tensor:
        """
        Args:
            src, pos: (B, S, C) flattened features of all levels and their position embeddings.
            reference_points: (B, S, L, 2) normalized (x, y) of every query on every level.
            spatial_shapes: (L, 2) int64 (H, W) of each level; level_start_index: (L,).
            padding_mask: (B, S) True at padded positions, or None.
            recompute: the encoder's open :class:`CheapRecompute`: the query and the norms'
                outputs are then remade in backward instead of kept (3 of the 12 (B, S, C)
                tensors a layer keeps). None: computed and kept as usual.
        """
        recompute = recompute if recompute is not None else CheapRecompute(enabled=False)
        src2 = self.self_attn(
            recompute.add(src, pos), reference_points, src, spatial_shapes, level_start_index, padding_mask
        )
        src = recompute.layer_norm(self.norm1, src + self.dropout1(src2))
        # In place only without autograd (saves allocating a (B, S, d_ffn) tensor): on the view
        # that linear returns, autograd would record an in-place op on a view, whose backward
        # zero-fills and copies the whole (B, S, d_ffn) gradient twice more; out of place, the
        # graph keeps the same one tensor (the ReLU's output).
        hidden = F.relu(self.linear1(src), inplace=not torch.is_grad_enabled())
        src2 = self.linear2(self.dropout2(hidden))
        return recompute.layer_norm(self.norm2, src + self.dropout3(src2))


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of identical deformable encoder layers sharing reference points."""

    def __init__(self, encoder_layer: nn.Module, num_layers: int, activation_checkpointing: bool = False):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.activation_checkpointing = activation_checkpointing

    @staticmethod
    def get_reference_points(
        spatial_shapes: torch.Tensor, valid_ratios: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        """
        Pixel centres of every level, normalized by the valid (unpadded) extent of that level,
        then rescaled into every other level's valid extent.

        Args:
            spatial_shapes: (L, 2) (H, W) per level. valid_ratios: (B, L, 2) as (w, h).
        Returns:
            (B, S, L, 2) reference points (x, y).
        """
        reference_points_list = []
        for lvl, (H_, W_) in enumerate(level_sizes(spatial_shapes)):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, H_ - 0.5, H_, dtype=torch.float32, device=device),
                torch.linspace(0.5, W_ - 0.5, W_, dtype=torch.float32, device=device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * H_)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * W_)
            reference_points_list.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(reference_points_list, 1)
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(
        self,
        src: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        valid_ratios: torch.Tensor,
        pos: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        output = src
        reference_points = self.get_reference_points(spatial_shapes, valid_ratios, device=src.device)
        # checkpointed layers keep nothing inside; a traced graph has no backward; torch.compile
        # plans what to keep for backward itself (and cannot trace saved-tensor hooks)
        cheap_recompute = CheapRecompute(
            enabled=torch.is_grad_enabled()
            and not self.activation_checkpointing
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        )
        with cheap_recompute:
            for layer in self.layers:
                output = run_layer(
                    layer, output, pos, reference_points, spatial_shapes, level_start_index, padding_mask,
                    cheap_recompute, checkpointed=self.activation_checkpointing,
                )
        return output


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable DETR's encoder, without its decoder: refines a list of feature levels jointly."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        encoder_layer = MSDeformAttnTransformerEncoderLayer(
            d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points
        )
        self.encoder = MSDeformAttnTransformerEncoder(encoder_layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self):
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            srcs, pos_embeds: per level (B, C, H_l, W_l), in the order of ``level_embed``.
        Returns:
            memory (B, S, C) with S = sum(H_l * W_l), spatial_shapes (L, 2) and level_start_index
            (L,), int64 on the CPU (on the memory's device while tracing).
        """
        # Images are padded before the backbone, so no position of a feature map is padding.
        src_flatten, lvl_pos_embed_flatten, shapes = [], [], []
        for lvl, (src, pos_embed) in enumerate(zip(srcs, pos_embeds)):
            # a traced shape stays dynamic, unlike a tensor made from Python ints
            shapes.append(torch._shape_as_tensor(src)[-2:])
            src_flatten.append(src.flatten(2).transpose(1, 2))
            lvl_pos_embed_flatten.append(
                pos_embed.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
            )
        src_flatten = torch.cat(src_flatten, 1)
        lvl_pos_embed_flatten = torch.cat(lvl_pos_embed_flatten, 1)
        spatial_shapes = torch.stack(shapes)
        if torch.jit.is_tracing():
            spatial_shapes = spatial_shapes.to(src_flatten.device)
        # else the level tables stay on the host, where sizes live: every reader of them (the
        # reference points, the deformable attention's checks, the maps' split) then costs no
        # GPU synchronisation (one per reader and layer before)
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        # All-valid maps: every ratio is exactly 1.
        valid_ratios = src_flatten.new_ones(src_flatten.shape[0], len(srcs), 2)
        memory = self.encoder(
            src_flatten, spatial_shapes, level_start_index, valid_ratios, lvl_pos_embed_flatten, None
        )
        return memory, spatial_shapes, level_start_index


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """
    Mask2Former's pixel decoder. The coarse levels named by
    ``DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES`` (1/32, 1/16, 1/8) are projected to
    ``conv_dim``, refined jointly by deformable-attention encoder layers, and the finer levels
    (1/4) are added FPN-style (``adapter_i`` lateral + ``layer_i`` 3x3 conv). The finest output
    becomes the mask features; the three coarsest outputs feed the transformer decoder.
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
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
        transformer_in_features: List[str],
        common_stride: int,
        transformer_n_points: int = 4,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(
                "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES names features "
                f"{missing} that are not among the head's input features {sorted(input_shape)}"
            )
        transformer_input_shape = {k: v for k, v in input_shape.items() if k in transformer_in_features}

        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]  # finest first: res2 ... res5
        self.feature_strides = [v.stride for k, v in input_shape]
        self.feature_channels = [v.channels for k, v in input_shape]

        transformer_input_shape = sorted(transformer_input_shape.items(), key=lambda x: x[1].stride)
        self.transformer_in_features = [k for k, v in transformer_input_shape]
        transformer_in_channels = [v.channels for k, v in transformer_input_shape]
        self.transformer_feature_strides = [v.stride for k, v in transformer_input_shape]

        self.transformer_num_feature_levels = len(self.transformer_in_features)
        # Projections run coarsest level first, the order the encoder and decoder see them.
        self.input_proj = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(in_channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
                for in_channels in transformer_in_channels[::-1]
            ]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
        )
        self.transformer.encoder.activation_checkpointing = activation_checkpointing
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = NUM_MULTI_SCALE_LEVELS
        self.common_stride = common_stride
        # FPN levels finer than the encoder's finest, down to the mask features' stride.
        stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = max(int(np.log2(stride) - np.log2(self.common_stride)), 0)

        # Top-down order: coarsest first.
        self.lateral_convs, self.output_convs = add_fpn_levels(
            self, self.feature_channels[: self.num_fpn_levels], conv_dim, norm
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "transformer_dim_feedforward": ENCODER_DIM_FEEDFORWARD,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "common_stride": head.COMMON_STRIDE,
            "activation_checkpointing": cfg.MODEL.MASK_FORMER.get("ACTIVATION_CHECKPOINTING", False),
        }

    @torch.autocast(device_type="cuda", enabled=False)
    def forward_features(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """
        Args:
            features: backbone features by name, each (B, C_l, H_l, W_l).
        Returns:
            mask features (B, mask_dim, H/4, W/4), the encoder output at the coarsest level
            (B, conv_dim, H/32, W/32), and three maps (B, conv_dim, H_l, W_l) coarsest first.
        """
        srcs = []
        pos = []
        # The deformable attention runs in fp32 (the encoder is kept out of autocast).
        for idx, f in enumerate(self.transformer_in_features[::-1]):
            x = features[f].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))

        y, spatial_shapes, level_start_index = self.transformer(srcs, pos)
        bs = y.shape[0]
        shapes = level_sizes(spatial_shapes)
        # (B, C, H_l, W_l) maps in the contiguous layout: a transposed view would be channels-last,
        # which makes every later resize and conv on it (and on what it feeds) convert layouts.
        out = [
            z.transpose(1, 2).reshape(bs, -1, h, w).contiguous()
            for z, (h, w) in zip(torch.split(y, [h * w for h, w in shapes], dim=1), shapes)
        ]

        for idx, f in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            x = features[f].float()
            cur_fpn = self.lateral_convs[idx](x)
            # The coarser map is upsampled to this level's size, as in an FPN.
            y = cur_fpn + F.interpolate(out[-1], size=cur_fpn.shape[-2:], mode="bilinear", align_corners=False)
            out.append(self.output_convs[idx](y))

        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features

    def forward(self, features):
        raise NotImplementedError("Pixel decoders are called through forward_features(features)")
