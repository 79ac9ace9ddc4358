"""Sine position encoding of video features: the image encoding of (y, x), plus one of time."""
from typing import Optional

import torch

from mask2former.modeling.transformer_decoder.position_encoding import (
    PositionEmbeddingSine,
    sine_features,
)

__all__ = ["PositionEmbeddingSine3D"]


class PositionEmbeddingSine3D(PositionEmbeddingSine):
    """
    Fixed sine/cosine encoding of the (t, y, x) position of every pixel of a clip. y and x are
    encoded as by :class:`PositionEmbeddingSine` (``num_pos_feats`` channels each); t gets
    ``2 * num_pos_feats`` channels of the same form, *added* to the concatenated (y, x) ones.
    The constructor arguments are :class:`PositionEmbeddingSine`'s.
    """

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, T, C, H, W) features; only the shape and device are used.
            mask: (B, T, H, W) bool, True at padded pixels; None means no padding.
        Returns:
            (B, T, 2 * num_pos_feats, H, W) float32: ``concat(pos_y, pos_x) + pos_t``.
        """
        if x.dim() != 5:
            raise ValueError(
                f"PositionEmbeddingSine3D expects (B, T, C, H, W) features, got shape {tuple(x.shape)}"
            )
        b, t, _, h, w = x.shape
        if mask is None:
            mask = torch.zeros((b, t, h, w), device=x.device, dtype=torch.bool)
        elif mask.shape != (b, t, h, w):
            raise ValueError(
                f"PositionEmbeddingSine3D: mask of shape {tuple(mask.shape)} does not match "
                f"features of shape {tuple(x.shape)}; expected (B, T, H, W)"
            )
        not_mask = ~mask
        pos_t = sine_features(self.positions(not_mask, 1), 2 * self.num_pos_feats, self.temperature)
        pos_y = sine_features(self.positions(not_mask, 2), self.num_pos_feats, self.temperature)
        pos_x = sine_features(self.positions(not_mask, 3), self.num_pos_feats, self.temperature)
        return (torch.cat((pos_y, pos_x), dim=4) + pos_t).permute(0, 1, 4, 2, 3)
