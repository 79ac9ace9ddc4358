"""Sine positional encoding of 2D feature maps (the DETR variant), shared by pixel and transformer decoders."""
import math
from typing import Optional

import torch
from torch import nn


def sine_features(embed: torch.Tensor, num_feats: int, temperature: float) -> torch.Tensor:
    """
    Sine/cosine features of positions.

    Args:
        embed: (...) float positions.
        num_feats: features per position (even).
        temperature: base of the geometric progression of wavelengths.
    Returns:
        (..., num_feats): feature i is position / temperature^(2*floor(i/2)/num_feats), through
        sin for even i and cos for odd i.
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=embed.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos = embed[..., None] / dim_t
    # even channels take sin, odd channels cos, interleaved
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """
    Fixed sine/cosine encoding of the (y, x) position of every pixel, "Attention is all you
    need" style, generalised to images. Positions count valid (non-padded) pixels only, so a
    padded image gets the same encoding on its valid area as an unpadded one when not normalized.
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: int = 10000,
        normalize: bool = False,
        scale: Optional[float] = None,
    ):
        """
        Args:
            num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels.
            temperature: base of the geometric progression of wavelengths.
            normalize: rescale positions of each axis to (0, scale].
            scale: range of normalized positions (default 2*pi); only valid with normalize=True.
        """
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: normalize should be True if scale is passed")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W) feature map; only its shape and device are used.
            mask: (B, H, W) bool, True at padded pixels; None means no padding.
        Returns:
            (B, 2 * num_pos_feats, H, W) float32 encoding: y channels first, then x channels.
        """
        batch = x.shape[0]
        if mask is None:
            # Every image has the same encoding: compute it once and repeat it over the batch.
            mask = torch.zeros((1, x.shape[2], x.shape[3]), device=x.device, dtype=torch.bool)
            return self._encode(mask).repeat(batch, 1, 1, 1)
        if mask.shape != (batch, x.shape[2], x.shape[3]):
            raise ValueError(
                f"PositionEmbeddingSine: mask of shape {tuple(mask.shape)} does not match "
                f"features of shape {tuple(x.shape)}; expected (B, H, W)"
            )
        return self._encode(mask)

    def _encode(self, mask: torch.Tensor) -> torch.Tensor:
        not_mask = ~mask
        y_embed = self.positions(not_mask, 1)
        x_embed = self.positions(not_mask, 2)
        pos_x = sine_features(x_embed, self.num_pos_feats, self.temperature)
        pos_y = sine_features(y_embed, self.num_pos_feats, self.temperature)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def positions(self, not_mask: torch.Tensor, dim: int) -> torch.Tensor:
        """
        Positions 1, 2, ... of the valid entries along axis ``dim`` of ``not_mask`` (bool, True
        = valid), float32; with ``normalize``, divided by the last one (plus eps) and times
        ``scale``.
        """
        embed = not_mask.cumsum(dim, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            last = embed.narrow(dim, embed.shape[dim] - 1, 1)
            embed = embed / (last + eps) * self.scale
        return embed

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )
