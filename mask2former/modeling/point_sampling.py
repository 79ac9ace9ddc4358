"""
Point sampling for the matcher and the mask losses.

- :func:`sample_table`: many masks at the same points, read as the columns of one (H*W, C)
  table with ``F.embedding_bag`` from the points' :func:`bilinear_corners`: the values of
  ``grid_sample`` with C channels (bit for bit on the CPU), in about 2/3 of its time for the
  matcher's 100 query masks.
- :func:`get_uncertain_point_coords_with_randomness`: the importance sampling of the point
  losses (PointRend), with detectron2's random draws.
"""
from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from detectron2.layers import cat
from detectron2.projects.point_rend.point_features import point_sample

__all__ = ["bilinear_corners", "get_uncertain_point_coords_with_randomness", "sample_table"]


def bilinear_corners(point_coords: Tensor, size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """
    The four pixels around each point and their bilinear weights, as ``grid_sample`` computes
    them (align_corners=False, zero padding: corners outside the mask get weight 0).

    Args:
        point_coords: (P, 2) points (x, y) in [0, 1]^2.
        size: (H, W) of the masks.

    Returns:
        (P, 4) indices ``y * W + x`` of the corners NW, NE, SW, SE in a flattened mask (0 where
        outside) and their (P, 4) weights, in the dtype of ``point_coords``.
    """
    height, width = size
    grid = 2.0 * point_coords - 1.0  # point_sample's conversion to grid_sample's [-1, 1]
    # grid_sample's CPU kernel un-normalises with one fused multiply-add: (g + 1) * size/2 - 0.5.
    xy = torch.addcmul(grid.new_tensor(-0.5), grid + 1, grid.new_tensor([width / 2, height / 2]))
    low = xy.floor()
    high_weight = xy - low
    x_weight = torch.stack([1 - high_weight[:, 0], high_weight[:, 0]], -1)  # (P, 2) west, east
    y_weight = torch.stack([1 - high_weight[:, 1], high_weight[:, 1]], -1)  # (P, 2) north, south
    x = low[:, 0].long()[:, None] + torch.arange(2, device=low.device)  # (P, 2)
    y = low[:, 1].long()[:, None] + torch.arange(2, device=low.device)
    x_inside, y_inside = (x >= 0) & (x < width), (y >= 0) & (y < height)
    weights = (y_weight * y_inside)[:, :, None] * (x_weight * x_inside)[:, None, :]  # (P, y, x)
    index = (y.clamp(0, height - 1) * width)[:, :, None] + x.clamp(0, width - 1)[:, None, :]
    return index.flatten(1), weights.flatten(1)


def sample_table(table: Tensor, corners: Tuple[Tensor, Tensor]) -> Tensor:
    """
    Bilinear values of C masks stored as the columns of a table, at shared points.

    Args:
        table: (H*W, C) float masks, one column per mask.
        corners: :func:`bilinear_corners` of P points for (H, W).

    Returns:
        (P, C) values, those of ``grid_sample`` on the (1, C, H, W) masks at the points.
    """
    index, weights = corners
    return F.embedding_bag(index, table, per_sample_weights=weights.to(table.dtype), mode="sum")


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
