"""
Swin Transformer (Liu et al., ICCV 2021) as a detectron2 backbone, in its dense-prediction form:
inputs of any size are padded (to the patch size, to the window size inside every block, and to
even sizes before every patch merging) and every stage's output is layer-normed and returned.

Parameter and buffer names match the published Mask2Former Swin checkpoints exactly
(``patch_embed.*``, ``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample.*``, ``norm{i}.*``).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

# the original module's public names: everything a Swin checkpoint's modules are built from
from .swin_blocks import (
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMerging,
    SwinTransformerBlock,
    WindowAttention,
    shifted_window_attention_mask,
    window_partition,
    window_reverse,
)

__all__ = [
    "BasicLayer",
    "D2SwinTransformer",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "SwinTransformer",
    "SwinTransformerBlock",
    "WindowAttention",
    "window_partition",
    "window_reverse",
]

SWIN_CONFIG_KEYS = (
    "PRETRAIN_IMG_SIZE", "PATCH_SIZE", "EMBED_DIM", "DEPTHS", "NUM_HEADS", "WINDOW_SIZE",
    "MLP_RATIO", "QKV_BIAS", "QK_SCALE", "DROP_RATE", "ATTN_DROP_RATE", "DROP_PATH_RATE", "APE",
    "PATCH_NORM", "OUT_FEATURES", "USE_CHECKPOINT",
)  # fmt: skip


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks alternating regular and shifted windows, then an optional
    PatchMerging. Owns no parameters itself (checkpoint names: ``blocks.*``, ``downsample.*``)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        drop_path: Sequence[float],
        downsample: bool,
        use_checkpoint: bool,
        **block_kwargs,
    ):
        """``block_kwargs``: mlp_ratio, qkv_bias, qk_scale, drop, attn_drop of every block."""
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        shifts = [0 if i % 2 == 0 else self.shift_size for i in range(depth)]
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim, num_heads, window_size, shifts[i], drop_path=drop_path[i], **block_kwargs
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(
        self, x: torch.Tensor, H: int, W: int
    ) -> Tuple[torch.Tensor, int, int, torch.Tensor, int, int]:
        """
        (B, H*W, C) -> (stage output (B, H*W, C), H, W, next-stage input (B, Wh*Ww, C'), Wh, Ww)
        where the next-stage input is downsampled iff the stage has a PatchMerging.
        """
        ws = self.window_size
        # integer ceil: H, W are 0-d tensors while tracing, and stay dynamic in the graph
        Hp = (H + ws - 1) // ws * ws
        Wp = (W + ws - 1) // ws * ws
        attn_mask = shifted_window_attention_mask(Hp, Wp, ws, self.shift_size, x.device, x.dtype)
        for blk in self.blocks:
            if self.use_checkpoint and x.requires_grad:
                x = checkpoint.checkpoint(blk, x, H, W, attn_mask, use_reentrant=False)
            else:
                x = blk(x, H, W, attn_mask)
        if self.downsample is None:
            return x, H, W, x, H, W
        return x, H, W, self.downsample(x, H, W), (H + 1) // 2, (W + 1) // 2


class SwinTransformer(nn.Module):
    """
    Swin Transformer trunk returning every stage's normed output,
    ``{"res{i+2}": (B, embed_dim * 2**i, H / (patch * 2**i), W / (patch * 2**i))}``
    (sizes rounded up).
    """

    def __init__(
        self,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"Swin: DEPTHS {list(depths)} and NUM_HEADS {list(num_heads)} differ")
        self.num_layers = len(depths)
        self.num_features = [int(embed_dim * 2**i) for i in range(self.num_layers)]
        for c, h in zip(self.num_features, num_heads):
            if c % h != 0:
                raise ValueError(f"Swin: stage width {c} not divisible by its NUM_HEADS {h}")
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.ape = ape

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        if ape:
            res = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, res, res))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # stochastic depth rate grows linearly over all blocks of all stages
        dpr = [v.item() for v in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            start = sum(depths[:i])
            self.layers.append(
                BasicLayer(
                    self.num_features[i],
                    depths[i],
                    num_heads[i],
                    window_size,
                    drop_path=dpr[start : start + depths[i]],
                    downsample=i < self.num_layers - 1,
                    use_checkpoint=use_checkpoint,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                )
            )
        for i in range(self.num_layers):
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(B, in_chans, H, W) -> {"res2": (B, C0, H/4, W/4), ..., "res5": (B, C3, H/32, W/32)}."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} takes an input of shape (B, {self.in_chans}, H, W); "
                f"got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        Wh, Ww = x.shape[2], x.shape[3]
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=(Wh, Ww), mode="bicubic")
            x = x + pos
        x = self.pos_drop(x.flatten(2).transpose(1, 2))

        outs = {}
        for i, layer in enumerate(self.layers):
            x_out, H, W, x, Wh, Ww = layer(x, Wh, Ww)
            x_out = getattr(self, f"norm{i}")(x_out)
            out = x_out.view(-1, H, W, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
            outs[f"res{i + 2}"] = out
        return outs


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(SwinTransformer, Backbone):
    """Swin Transformer as a detectron2 :class:`Backbone`, built from ``cfg.MODEL.SWIN``."""

    @configurable
    def __init__(self, *, out_features: Sequence[str] = ("res2", "res3", "res4", "res5"), **kwargs):
        """
        Args:
            out_features: subset of "res2".."res{num_stages+1}" to return.
            kwargs: arguments of :class:`SwinTransformer`.
        """
        super().__init__(**kwargs)
        names = [f"res{i + 2}" for i in range(self.num_layers)]
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise ValueError(f"MODEL.SWIN.OUT_FEATURES: unknown {unknown}; choose from {names}")
        self._out_features: List[str] = list(out_features)
        self._out_feature_strides = {n: self.patch_size * 2**i for i, n in enumerate(names)}
        self._out_feature_channels = {n: self.num_features[i] for i, n in enumerate(names)}

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> dict:
        # every MODEL.SWIN key is the upper-case name of an __init__ argument
        args = {key.lower(): cfg.MODEL.SWIN[key] for key in SWIN_CONFIG_KEYS}
        for key in ("depths", "num_heads", "out_features"):
            args[key] = list(args[key])
        args["in_chans"] = input_shape.channels if input_shape.channels is not None else 3
        return args

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {name: (B, C, ceil(H/stride), ceil(W/stride))} for OUT_FEATURES."""
        outputs = super().forward(x)
        return {k: v for k, v in outputs.items() if k in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        # stride of the coarsest stage (32 for the standard 4-stage, patch-4 model)
        return self.patch_size * 2 ** (self.num_layers - 1)
