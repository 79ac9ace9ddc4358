"""Sine positional encoding of 2D feature maps (the DETR variant), shared by pixel and transformer decoders."""
import math
from typing import Optional

import torch
from torch import nn


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
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)

        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        # even channels take sin, odd channels cos, interleaved
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )
