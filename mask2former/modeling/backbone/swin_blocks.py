"""
The building blocks of the Swin Transformer backbone (:mod:`.swin`): window partitioning and
(shifted-)window attention, the transformer block, patch embedding and patch merging.
Parameter names are those of the published checkpoints.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MASKED_LOGIT",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "SwinTransformerBlock",
    "WindowAttention",
    "drop_path",
    "relative_position_index",
    "shifted_window_attention_mask",
    "window_partition",
    "window_reverse",
]

# Logit added between tokens of a shifted window that come from different image regions;
# large enough that softmax gives them (numerically) zero weight.
MASKED_LOGIT = -100.0

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
    B = windows.shape[0] // ((H // window_size) * (W // window_size))
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
        # while tracing, the padding depends on the input size: always crop
        if torch.jit.is_tracing() or pad_r > 0 or pad_b > 0:
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
