"""
Swin Transformer (Liu et al., ICCV 2021) as a detectron2 backbone, in its dense-prediction form:
inputs of any size are padded (to the patch size, to the window size inside every block, and to
even sizes before every patch merging) and every stage's output is layer-normed and returned.

Parameter and buffer names match the published Mask2Former Swin checkpoints exactly
(``patch_embed.*``, ``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample.*``, ``norm{i}.*``).
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

# Logit added between tokens of a shifted window that come from different image regions;
# large enough that softmax gives them (numerically) zero weight.
MASKED_LOGIT = -100.0

SWIN_CONFIG_KEYS = (
    "PRETRAIN_IMG_SIZE", "PATCH_SIZE", "EMBED_DIM", "DEPTHS", "NUM_HEADS", "WINDOW_SIZE",
    "MLP_RATIO", "QKV_BIAS", "QK_SCALE", "DROP_RATE", "ATTN_DROP_RATE", "DROP_PATH_RATE", "APE",
    "PATCH_NORM", "OUT_FEATURES", "USE_CHECKPOINT",
)  # fmt: skip


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``drop_prob``
    and rescale the kept ones by 1 / (1 - drop_prob), so the expectation is unchanged."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = (keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
    return x.div(keep_prob) * keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (per sample, active only in training)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, on (..., C) tokens."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window_size`` -> (B * nW, ws, ws, C), windows in
    row-major order within each image."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws, ws, C) -> (B, H, W, C)."""
    B = int(windows.shape[0] / (H * W / window_size / window_size))
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def relative_position_index(window_size: int) -> torch.Tensor:
    """(ws*ws, ws*ws) int64: for query token i and key token j of a window (row-major), the row
    of the (2ws-1)^2 bias table for their offset, (dy + ws-1) * (2ws-1) + (dx + ws-1)."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    )  # (2, ws, ws)
    coords = coords.flatten(1)  # (2, ws*ws)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window_size - 1
    rel[:, :, 1] += window_size - 1
    rel[:, :, 0] *= 2 * window_size - 1
    return rel.sum(-1)


def shifted_window_attention_mask(
    Hp: int,
    Wp: int,
    window_size: int,
    shift_size: int,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """
    Additive attention mask for shifted windows on a padded (Hp, Wp) feature map.

    After the cyclic shift, the last row/column of windows mixes pixels from opposite image
    borders; pixels are labelled by the region they came from and pairs of different regions get
    MASKED_LOGIT. Returns (nW, ws*ws, ws*ws) with values in {0, MASKED_LOGIT}.
    """
    img_mask = torch.zeros((1, Hp, Wp, 1), device=device, dtype=dtype)
    slices = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    cnt = 0
    for h in slices:
        for w in slices:
            img_mask[:, h, w, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, window_size).view(-1, window_size * window_size)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, MASKED_LOGIT).masked_fill(attn_mask == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (ws x ws) windows with a learned relative position bias."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5

        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        # persistent: the published checkpoints contain it
        self.register_buffer("relative_position_index", relative_position_index(window_size))

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B * nW, N, C) tokens of each window, N = ws * ws.
            mask: (nW, N, N) additive mask (0 / MASKED_LOGIT) or None.
        Returns:
            (B * nW, N, C)
        """
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B_, heads, N, C/heads)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)

        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1).contiguous()  # (heads, N, N)
        attn = attn + bias.unsqueeze(0)

        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))

        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP, each pre-normed and residual with stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size={shift_size} must be in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, H: int, W: int, attn_mask: Optional[torch.Tensor]):
        """
        Args:
            x: (B, H*W, C) tokens in row-major order.
            attn_mask: (nW, ws*ws, ws*ws) mask for the window-padded size; used iff shifted.
        Returns:
            (B, H*W, C)
        """
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"SwinTransformerBlock: got {L} tokens for a {H}x{W} feature map")
        ws = self.window_size
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)

        # pad (after the norm, so padded tokens are zeros) to a multiple of the window size
        pad_r = (ws - W % ws) % ws
        pad_b = (ws - H % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, Hp, Wp, _ = x.shape

        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        else:
            attn_mask = None

        windows = window_partition(x, ws).view(-1, ws * ws, C)
        windows = self.attn(windows, mask=attn_mask).view(-1, ws, ws, C)
        x = window_reverse(windows, ws, Hp, Wp)

        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        if pad_r > 0 or pad_b > 0:
            x = x[:, :H, :W, :].contiguous()
        x = x.view(B, H * W, C)

        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (padding odd sizes) -> LayerNorm(4C) -> Linear(4C, 2C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """(B, H*W, C) -> (B, ceil(H/2) * ceil(W/2), 2C)."""
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"PatchMerging: got {L} tokens for a {H}x{W} feature map")
        x = x.view(B, H, W, C)
        if H % 2 == 1 or W % 2 == 1:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x0 = x[:, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, :]
        x3 = x[:, 1::2, 1::2, :]
        x = torch.cat([x0, x1, x2, x3], -1).view(B, -1, 4 * C)
        return self.reduction(self.norm(x))


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
        Hp = int(math.ceil(H / ws)) * ws
        Wp = int(math.ceil(W / ws)) * ws
        attn_mask = shifted_window_attention_mask(Hp, Wp, ws, self.shift_size, x.device, x.dtype)
        for blk in self.blocks:
            if self.use_checkpoint and x.requires_grad:
                x = checkpoint.checkpoint(blk, x, H, W, attn_mask, use_reentrant=False)
            else:
                x = blk(x, H, W, attn_mask)
        if self.downsample is None:
            return x, H, W, x, H, W
        return x, H, W, self.downsample(x, H, W), (H + 1) // 2, (W + 1) // 2


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: pad to a multiple of the patch size, conv, optional LN."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, embed_dim, ceil(H/p), ceil(W/p))."""
        _, _, H, W = x.shape
        p = self.patch_size
        if W % p != 0:
            x = F.pad(x, (0, p - W % p))
        if H % p != 0:
            x = F.pad(x, (0, 0, 0, p - H % p))
        x = self.proj(x)
        if self.norm is not None:
            Wh, Ww = x.shape[2], x.shape[3]
            x = self.norm(x.flatten(2).transpose(1, 2))
            x = x.transpose(1, 2).view(-1, self.embed_dim, Wh, Ww)
        return x


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
