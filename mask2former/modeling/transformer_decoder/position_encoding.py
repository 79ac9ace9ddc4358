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
            return self._encode_unpadded(batch, x.shape[2], x.shape[3], x.device)
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

    def _encode_unpadded(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """:meth:`_encode` of an all-valid (B, H, W) mask: the y channels depend on the row
        only and the x channels on the column only, so the sines are taken of H + W positions
        instead of H * W (the same values) and broadcast, in the contiguous (B, C, H, W) layout."""
        valid_y = torch.ones((1, height, 1), device=device, dtype=torch.bool)
        valid_x = torch.ones((1, 1, width), device=device, dtype=torch.bool)
        # (1, H, 1, F) and (1, 1, W, F) -> (1, F, H, 1) and (1, F, 1, W)
        pos_y = sine_features(self.positions(valid_y, 1), self.num_pos_feats, self.temperature)
        pos_x = sine_features(self.positions(valid_x, 2), self.num_pos_feats, self.temperature)
        shape = (batch, self.num_pos_feats, height, width)
        return torch.cat(
            (pos_y.permute(0, 3, 1, 2).expand(shape), pos_x.permute(0, 3, 1, 2).expand(shape)), dim=1
        )

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
