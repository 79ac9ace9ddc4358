"""
Hungarian matching between predicted masks and ground-truth segments.

The matching cost of query ``i`` and target ``j`` is a weighted sum of a classification cost
(negative softmax probability of the target class), a sigmoid binary cross-entropy and a dice
cost. The two mask costs are computed on a random set of points shared by all queries and
targets of an image, so memory grows with ``num_points`` rather than with mask resolution.

Videos: masks with a time axis, (Q, T, H, W) against (N, T, H', W'), are matched as tubes. One
set of points is drawn per video and shared by its T frames; each tube's T*P values are
compared as one mask.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from detectron2.projects.point_rend.point_features import point_sample

from .point_sampling import bilinear_corners, sample_table

__all__ = ["HungarianMatcher", "batch_dice_loss", "batch_sigmoid_ce_loss", "check_time_axis"]


def masks_at_points(masks: Tensor, point_coords: Tensor) -> Tensor:
    """
    Mask values at points, bilinearly (detectron2's ``point_sample``).

    Args:
        masks: (N, H, W) masks or mask logits.
        point_coords: (N, P, 2) points in [0, 1]^2, each mask its own, or (1, P, 2) points
            shared by all masks (then sampled as the channels of one image: the points are
            transformed once for all masks).

    Returns:
        (N, P) values.
    """
    if point_coords.shape[0] == 1:
        return point_sample(masks[None], point_coords, align_corners=False)[0]
    return point_sample(masks[:, None], point_coords, align_corners=False)[:, 0]


def _masks_to_compare(
    pred_masks: Tensor, tgt_masks: Tensor, point_coords: Optional[Tensor]
) -> Tuple[Tensor, Tensor]:
    """
    The values at which predicted and target masks (or tubes) are compared, as float32.

    Args:
        pred_masks: (Q, [T,] H, W) mask logits.
        tgt_masks: (N, [T,] H', W') binary masks.
        point_coords: (1, P, 2) points in [0, 1]^2 shared by all masks and frames, or None for
            every pixel of the prediction grid (targets resized to it, nearest).

    Returns:
        (Q, D) predictions and (D, N) targets (a transposed view), D = T*P (or T*H*W), the
        values of a tube's frames in the same order on both sides.
    """
    num_queries, num_targets = pred_masks.shape[0], tgt_masks.shape[0]
    pred_masks = pred_masks.flatten(0, -3)  # (Q*T, H, W)
    tgt_masks = tgt_masks.flatten(0, -3)  # (N*T, H', W')
    if point_coords is None:
        tgt_masks = F.interpolate(tgt_masks[:, None].float(), size=pred_masks.shape[-2:], mode="nearest")
        return pred_masks.float().reshape(num_queries, -1), tgt_masks.reshape(num_targets, -1).t()
    num_points = point_coords.shape[1]
    # The Q*T predicted masks, one column each of a (H*W, Q*T) table, read at the same corners.
    table = pred_masks.flatten(1).t().float().contiguous()
    out_masks = sample_table(table, bilinear_corners(point_coords[0], pred_masks.shape[-2:]))  # (P, Q*T)
    del table
    # (query, frame, point) order, as the targets'
    out_masks = out_masks.view(num_points, num_queries, -1).permute(1, 2, 0).reshape(num_queries, -1)
    tgt_masks = masks_at_points(tgt_masks.to(pred_masks), point_coords)  # (N*T, P)
    return out_masks, tgt_masks.float().reshape(num_targets, -1).t()


def dice(inputs: Tensor, targets: Tensor, pairwise: bool) -> Tensor:
    """
    Dice loss ``1 - (2 |x t| + 1) / (|x| + |t| + 1)`` with ``x = sigmoid(inputs)``, of every
    prediction against every target (``pairwise``: the matcher's cost) or of each prediction
    against its own target (the criterion's loss).

    Args:
        inputs: (Q, P) mask logits at P points.
        targets: (N, P) binary (or soft) target values at the same points; N = Q unless
            ``pairwise``.

    Returns:
        (Q, N) if ``pairwise``, else (Q,).
    """
    inputs = inputs.sigmoid()
    if pairwise:
        intersection = torch.einsum("nc,mc->nm", inputs, targets)
        input_sum, target_sum = inputs.sum(-1)[:, None], targets.sum(-1)[None, :]
    else:
        intersection = (inputs * targets).sum(-1)
        input_sum, target_sum = inputs.sum(-1), targets.sum(-1)
    return _dice_from_sums(intersection, input_sum, target_sum)


def _dice_from_sums(intersection: Tensor, input_sum: Tensor, target_sum: Tensor) -> Tensor:
    return 1 - (2 * intersection + 1) / (input_sum + target_sum + 1)


def batch_dice_loss(inputs: Tensor, targets: Tensor) -> Tensor:
    """(Q, N) pairwise dice loss of (Q, P) mask logits against (N, P) targets; see :func:`dice`."""
    return dice(inputs, targets, pairwise=True)


def batch_sigmoid_ce_loss(inputs: Tensor, targets: Tensor) -> Tensor:
    """
    Pairwise sigmoid binary cross-entropy between every prediction and every target, averaged
    over points.

    Args:
        inputs: (Q, P) mask logits.
        targets: (N, P) binary (or soft) target values.

    Returns:
        (Q, N) tensor of mean per-point BCE.
    """
    return _pairwise_mask_costs(inputs, targets.t(), with_dice=False)[0]


def _pairwise_mask_costs(
    inputs: Tensor, targets: Tensor, with_dice: bool = True
) -> Tuple[Tensor, Optional[Tensor]]:
    """
    Pairwise mean sigmoid BCE and dice loss (see :func:`dice`) of Q predictions against N targets.

    Args:
        inputs: (Q, D) mask logits at D points.
        targets: (D, N) target values at the same points, one column per target.

    Returns:
        (Q, N) BCE and (Q, N) dice (None unless ``with_dice``).
    """
    # BCE(x, t) = softplus(x) - x t: linear in the target, so the pairwise loss is a row sum
    # minus one matrix product, and no (Q, N, D) tensor is ever built.
    bce = (F.softplus(inputs).sum(-1, keepdim=True) - inputs @ targets) / inputs.shape[1]
    if not with_dice:
        return bce, None
    probs = inputs.sigmoid()
    dice_cost = _dice_from_sums(probs @ targets, probs.sum(-1, keepdim=True), targets.sum(0, keepdim=True))
    return bce, dice_cost


def check_time_axis(pred_shape: Tuple[int, ...], target_shape: Tuple[int, ...], where: str) -> None:
    """
    Predicted and target masks must both be frames (H, W) or both tubes (T, H, W) of the same
    T; only the spatial sizes may differ.

    Args:
        pred_shape: shape of one predicted mask, (H, W) or (T, H, W).
        target_shape: shape of one target mask, (H', W') or (T, H', W').
        where: prefix of the error message.
    """
    if len(pred_shape) != len(target_shape) or tuple(pred_shape[:-2]) != tuple(target_shape[:-2]):
        raise ValueError(
            f"{where}: predicted masks of shape {tuple(pred_shape)} and target masks of shape "
            f"{tuple(target_shape)} differ in their leading (time) axes; expected (H, W) and "
            "(H', W'), or (T, H, W) and (T, H', W')"
        )


def indented_repr(head: str, fields: Dict[str, object], indent: int) -> str:
    """``head``, then one indented "name: value" line per field: the layout of the matcher's and
    the criterion's repr."""
    return "\n".join([head] + [f"{' ' * indent}{name}: {value}" for name, value in fields.items()])


class HungarianMatcher(nn.Module):
    """
    One-to-one assignment of queries to targets minimising
    ``cost_class * C_class + cost_mask * C_bce + cost_dice * C_dice``.

    There are usually more queries than targets; unmatched queries are treated as "no object"
    by the criterion.
    """

    def __init__(
        self, cost_class: float = 1, cost_mask: float = 1, cost_dice: float = 1, num_points: int = 0
    ):
        """
        Args:
            cost_class: weight of the classification cost.
            cost_mask: weight of the sigmoid BCE mask cost.
            cost_dice: weight of the dice mask cost.
            num_points: number of random points used for the mask costs. ``<= 0`` compares
                masks at every pixel of the prediction grid instead (targets resized to it).
        """
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise AssertionError("HungarianMatcher: all costs are 0, the matching is undefined")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def compute_cost_matrix(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor,
        tgt_labels: Tensor,
        tgt_masks: Tensor,
        point_coords: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Cost matrix of one image, or of one video when the masks have a time axis.

        Args:
            pred_logits: (Q, K+1) class logits (last class is "no object").
            pred_masks: (Q, H, W) mask logits, or (Q, T, H, W) mask tubes of a video.
            tgt_labels: (N,) int64 labels in [0, K).
            tgt_masks: (N, H', W') binary masks (any resolution; sampled in normalised coords),
                or (N, T, H', W') tubes.
            point_coords: (1, P, 2) points in [0, 1]^2 shared by predictions and targets (and
                by all T frames of a video), or None to compare at every pixel of the
                prediction grid.

        Returns:
            (Q, N) float32 cost matrix. A tube's costs are those of its T*P (or T*H*W) values
            compared as one mask.
        """
        out_prob = pred_logits.softmax(-1)  # (Q, K+1)
        # The constant 1 of "1 - prob" does not change the assignment, so it is omitted.
        cost_class = -out_prob[:, tgt_labels]

        out_masks, tgt_masks = _masks_to_compare(pred_masks, tgt_masks, point_coords)
        # Under mixed precision the sums over thousands of points overflow/lose precision
        # in half precision, so the mask costs are always computed in float32.
        with torch.autocast(device_type=out_masks.device.type, enabled=False):
            cost_mask, cost_dice = _pairwise_mask_costs(out_masks, tgt_masks)
        return (
            self.cost_mask * cost_mask
            + self.cost_class * cost_class.float()
            + self.cost_dice * cost_dice
        )

    @torch.no_grad()
    def memory_efficient_forward(
        self, outputs: Dict[str, Tensor], targets: List[Dict[str, Tensor]]
    ) -> List[Tuple[Tensor, Tensor]]:
        """
        Match each image separately; see :meth:`forward`.
        """
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        bs, num_queries = pred_logits.shape[:2]
        if len(targets) != bs:
            raise ValueError(
                f"HungarianMatcher: got {len(targets)} target dicts for a batch of {bs} images"
            )
        num_classes = pred_logits.shape[-1] - 1

        indices = []
        for b in range(bs):
            tgt_ids = targets[b]["labels"]
            tgt_mask = targets[b]["masks"]
            if tgt_ids.shape[0] != tgt_mask.shape[0]:
                raise ValueError(
                    f"HungarianMatcher: image {b} has {tgt_ids.shape[0]} labels but "
                    f"{tgt_mask.shape[0]} masks"
                )
            check_time_axis(pred_masks.shape[2:], tgt_mask.shape[1:], f"HungarianMatcher: item {b}")
            if tgt_ids.numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            if int(tgt_ids.min()) < 0 or int(tgt_ids.max()) >= num_classes:
                raise ValueError(
                    f"HungarianMatcher: image {b} has labels {tgt_ids.tolist()} outside "
                    f"[0, {num_classes}) (pred_logits has {num_classes} classes + no-object)"
                )

            point_coords = None
            if self.num_points > 0:
                point_coords = torch.rand(1, self.num_points, 2, device=pred_masks.device)
            C = self.compute_cost_matrix(
                pred_logits[b], pred_masks[b], tgt_ids, tgt_mask, point_coords
            )
            C = C.reshape(num_queries, -1).cpu()
            if not torch.isfinite(C).all():
                raise FloatingPointError(
                    f"HungarianMatcher: non-finite matching cost for image {b} "
                    "(NaN/Inf in pred_logits or pred_masks?)"
                )
            i, j = linear_sum_assignment(C.numpy())
            indices.append(
                (torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64))
            )
        return indices

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, Tensor], targets: List[Dict[str, Tensor]]
    ) -> List[Tuple[Tensor, Tensor]]:
        """
        Args:
            outputs: {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H, W)}, or for videos
                "pred_masks" (B, Q, T, H, W).
            targets: B dicts {"labels": (N_b,) int64, "masks": (N_b, H', W')}, or for videos
                "masks" (N_b, T, H', W').

        Returns:
            B tuples ``(index_i, index_j)`` of int64 tensors of length ``min(Q, N_b)``:
            query ``index_i[k]`` is matched to target ``index_j[k]``.
        """
        return self.memory_efficient_forward(outputs, targets)

    def __repr__(self, _repr_indent: int = 4) -> str:
        names = ("cost_class", "cost_mask", "cost_dice", "num_points")
        fields = {name: getattr(self, name) for name in names}
        return indented_repr("Matcher " + self.__class__.__name__, fields, _repr_indent)
