"""
Importance sampling of the points of the mask losses (PointRend), with detectron2's random draws.
"""
from typing import Callable

import torch
from torch import Tensor

from detectron2.layers import cat
from detectron2.projects.point_rend.point_features import point_sample

__all__ = ["get_uncertain_point_coords_with_randomness"]


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
