"""
Point sampling of masks for the matcher and the mask losses.

Masks are sampled bilinearly, as ``F.grid_sample(..., align_corners=False)`` on zero-padded
masks (detectron2's ``point_sample``), but from explicit corner indices and weights, so that

- the Q predicted masks of an image, sharing its points, are read as the rows of one
  (H*W, Q) table with ``F.embedding_bag``: several times faster than ``grid_sample`` with Q
  channels, and the same values;
- binary target masks are read in place, in their own dtype (bool): no float copy of the
  targets, no copy of the matched ones, no zero padding.

And the importance sampling of the point losses (PointRend), with detectron2's random draws.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from detectron2.layers import cat
from detectron2.projects.point_rend.point_features import point_sample

__all__ = [
    "BilinearCorners",
    "bilinear_corners",
    "get_uncertain_point_coords_with_randomness",
    "sample_masks",
    "sample_table",
]

BilinearCorners = Tuple[Tensor, Tensor]  # flat pixel indices (..., 4) int64, weights (..., 4)


def bilinear_corners(
    point_coords: Tensor, grid_size: Tuple[int, int], mask_size: Optional[Tuple[int, int]] = None
) -> BilinearCorners:
    """
    The four pixels around each point and their bilinear weights, as ``grid_sample`` computes
    them on the CPU (align_corners=False; corners outside the mask get weight 0).

    Args:
        point_coords: (..., 2) points (x, y) in [0, 1]^2.
        grid_size: (H, W) the points are normalised to.
        mask_size: (H_m, W_m) <= (H, W) of the mask actually read, when it is the top-left part
            of the (H, W) grid (a mask zero-padded to H x W at the bottom/right); default (H, W).

    Returns:
        (..., 4) indices ``y * W_m + x`` of the corners NW, NE, SW, SE in the flattened mask
        (0 where outside), and their (..., 4) weights in the dtype of ``point_coords``.
    """
    mask_size = mask_size or grid_size
    half_size = point_coords.new_tensor([grid_size[1] / 2, grid_size[0] / 2])  # (x, y)
    grid = 2.0 * point_coords - 1.0  # point_sample's conversion to grid_sample's [-1, 1]
    # grid_sample's CPU kernel un-normalises with one fused multiply-add: (g + 1) * size/2 - 0.5.
    xy = torch.addcmul(point_coords.new_tensor(-0.5), grid + 1, half_size)
    low = xy.floor()
    high_weight = xy - low
    weights = torch.stack([1 - high_weight, high_weight], -2)  # (..., low/high, x/y)
    pixel = low.long()[..., None, :] + torch.arange(2, device=low.device)[:, None]
    limit = torch.tensor([mask_size[1], mask_size[0]], device=low.device)
    inside = (pixel >= 0) & (pixel < limit)
    weights = weights * inside
    pixel = torch.minimum(pixel.clamp_min(0), limit - 1)
    # (y: north/south) x (x: west/east) -> NW, NE, SW, SE
    index = pixel[..., :, None, 1] * mask_size[1] + pixel[..., None, :, 0]
    weights = weights[..., :, None, 1] * weights[..., None, :, 0]
    return index.flatten(-2), weights.flatten(-2)


def sample_table(table: Tensor, corners: BilinearCorners) -> Tensor:
    """
    Bilinear values of C masks stored as the columns of a table, at shared points.

    Args:
        table: (H*W, C) float masks, one column per mask.
        corners: :func:`bilinear_corners` of P points for (H, W), of shape (P, 4).

    Returns:
        (P, C) values, those of ``grid_sample`` on the (1, C, H, W) masks.
    """
    index, weights = corners
    return F.embedding_bag(index, table, per_sample_weights=weights.to(table.dtype), mode="sum")


def sample_masks(masks: Tensor, corners: BilinearCorners, rows: Optional[Tensor] = None) -> Tensor:
    """
    Bilinear values of flattened masks of any dtype (e.g. bool targets), read in place.

    Args:
        masks: (M, H*W) masks.
        corners: :func:`bilinear_corners` for (H, W), of shape (P, 4) (points shared by all M
            masks), or (R, P, 4) with ``rows``.
        rows: (R,) int64, the mask read by each row of per-row ``corners``.

    Returns:
        (M, P), or (R, P) with ``rows``, in the dtype of the weights: the values of
        ``grid_sample`` on the masks converted to that dtype, but for float rounding.
    """
    index, weights = corners
    if rows is None:
        values = masks.index_select(1, index.flatten()).view(masks.shape[0], *index.shape)
    else:
        values = masks.flatten().take(rows[:, None, None] * masks.shape[1] + index)
    return (values.to(weights.dtype) * weights).sum(-1)


def get_uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> Tensor:
    """
    detectron2's function of the same name (same arguments, same random draws in the same order,
    same points) without its two costly steps: the top-k is not sorted (the points are the same
    set, and the losses do not depend on their order but for float rounding), and the chosen
    coordinates are gathered with ``torch.gather`` instead of advanced indexing.

    Args:
        coarse_logits: (R, 1, H, W) class-agnostic mask logits.
        uncertainty_func: (R, 1, P) logits -> (R, 1, P) uncertainties.
        num_points: P, points per mask.
        oversample_ratio: candidates drawn per point (>= 1).
        importance_sample_ratio: fraction of the P points chosen by uncertainty, in [0, 1].

    Returns:
        (R, P, 2) points in [0, 1]^2: the most uncertain candidates, then uniform random points.
    """
    assert oversample_ratio >= 1
    assert 0 <= importance_sample_ratio <= 1
    num_boxes = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    point_coords = torch.rand(num_boxes, num_sampled, 2, device=coarse_logits.device)
    point_logits = point_sample(coarse_logits, point_coords, align_corners=False)
    point_uncertainties = uncertainty_func(point_logits)
    num_uncertain_points = int(importance_sample_ratio * num_points)
    num_random_points = num_points - num_uncertain_points
    idx = torch.topk(point_uncertainties[:, 0, :], k=num_uncertain_points, dim=1, sorted=False)[1]
    point_coords = torch.gather(point_coords, 1, idx[:, :, None].expand(-1, -1, 2))
    if num_random_points > 0:
        random_coords = torch.rand(num_boxes, num_random_points, 2, device=coarse_logits.device)
        point_coords = cat([point_coords, random_coords], dim=1)
    return point_coords
