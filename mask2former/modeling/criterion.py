"""
Training losses of Mask2Former.

The criterion first matches queries to ground-truth segments (Hungarian matching), then
computes a classification loss over all queries and mask losses (sigmoid BCE + dice) over the
matched queries only, at ``num_points`` uncertainty-sampled points per mask (PointRend-style
importance sampling) instead of at full resolution. Video mask tubes (a time axis after the
query axis) are sampled frame by frame (see :meth:`SetCriterion.loss_masks`).
"""
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from detectron2.utils import comm

from .matcher import check_time_axis, dice, indented_repr, masks_at_points
from .point_sampling import get_uncertain_point_coords_with_randomness

__all__ = ["SetCriterion", "PointMaskLosses", "dice_loss", "sigmoid_ce_loss", "calculate_uncertainty"]

Outputs = Dict[str, Tensor]  # "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, H, W)
Targets = List[Dict[str, Tensor]]  # per image "labels" (N_b,), "masks" (N_b, H', W')
Indices = List[Tuple[Tensor, Tensor]]  # per image (query indices, target indices) matched
Losses = Dict[str, Tensor]


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """
    Args:
        inputs: (R, P) mask logits at P points.
        targets: (R, P) binary (or soft) targets at the same points.
        num_masks: normaliser (number of target masks in the batch, averaged over processes).

    Returns:
        scalar: sum over masks of ``1 - (2 |x t| + 1) / (|x| + |t| + 1)``, divided by num_masks.
    """
    return dice(inputs, targets, pairwise=False).sum() / num_masks


def sigmoid_ce_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """
    Args:
        inputs: (R, P) mask logits at P points.
        targets: (R, P) binary (or soft) targets.
        num_masks: normaliser.

    Returns:
        scalar: per-mask mean BCE over points, summed over masks, divided by num_masks.

    The matcher's pairwise form (:func:`~mask2former.modeling.matcher.batch_sigmoid_ce_loss`)
    is another computation (two matrix products over the points), not this one broadcast: each
    keeps the reference's values to the bit.
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """
    Uncertainty of class-agnostic mask logits: points whose logit is closest to 0 (probability
    closest to 0.5) are the most uncertain.

    Args:
        logits: (R, 1, ...) mask logits.

    Returns:
        (R, 1, ...) uncertainty scores, higher is more uncertain.
    """
    assert logits.shape[1] == 1, f"expected class-agnostic logits (R, 1, ...), got {logits.shape}"
    return -torch.abs(logits)


class PointMaskLosses(torch.autograd.Function):
    """
    :func:`sigmoid_ce_loss` and :func:`dice_loss` of masks sampled at points, as one autograd
    node: ``apply(masks (R, H, W), point_coords (R, P, 2), labels (R, P), num_masks)`` returns
    the two scalar losses, with the values of the plain computation. For the backward it keeps
    only its inputs (the plain graph also keeps the sampling grid, the point logits and their
    sigmoid) and recomputes the point logits; gradients flow to ``masks`` only. Measured with
    benchmarks/criterion.py: a third less memory kept for the backward.
    """

    @staticmethod
    def forward(ctx, masks: Tensor, point_coords: Tensor, labels: Tensor, num_masks: float):
        logits = masks_at_points(masks, point_coords)
        ctx.save_for_backward(masks, point_coords, labels)
        ctx.num_masks = num_masks
        return sigmoid_ce_loss(logits, labels, num_masks), dice_loss(logits, labels, num_masks)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_bce: Tensor, grad_dice: Tensor):
        masks, point_coords, labels = ctx.saved_tensors
        # half precision masks (autocast) are sampled in float32, as autocast samples them
        work = masks if masks.dtype in (torch.float32, torch.float64) else masks.float()
        grid = (2.0 * point_coords - 1.0)[:, :, None].to(work.dtype)  # (R, P, 1, 2), point_sample's
        logits = F.grid_sample(work[:, None], grid, align_corners=False)[:, 0, :, 0]
        labels = labels.to(work.dtype)
        probs = logits.sigmoid()
        # d(mean BCE)/dx = (sigmoid(x) - t) / P;  with S = sum p + sum t + 1 and I = sum p t,
        # d(1 - (2I + 1) / S)/dp = ((2I + 1) - 2 t S) / S^2, and dp/dx = p (1 - p).
        grad_logits = (probs - labels) * (grad_bce / (logits.shape[1] * ctx.num_masks))
        total = probs.sum(-1, keepdim=True) + labels.sum(-1, keepdim=True) + 1
        intersection = (probs * labels).sum(-1, keepdim=True)
        grad_probs = (2 * intersection + 1 - 2 * labels * total) / total.square()
        grad_logits += grad_probs * probs * (1 - probs) * (grad_dice / ctx.num_masks)
        grad_masks = torch.ops.aten.grid_sampler_2d_backward(
            grad_logits[:, None, :, None], work[:, None], grid,
            0, 0, False, [True, False],  # bilinear, zero padding, align_corners=False
        )[0]
        return grad_masks[:, 0].to(masks.dtype), None, None, None


def _pad_masks_to_max_size(masks: Sequence[Tensor]) -> List[Tensor]:
    """
    Zero-pad (N_b, H_b, W_b) masks at the bottom/right to the largest H and W of the batch, as
    detectron2's ImageList pads images, so that normalised point coordinates mean the same
    location in every image of the batch.
    """
    max_h = max(m.shape[-2] for m in masks)
    max_w = max(m.shape[-1] for m in masks)
    return [
        m if m.shape[-2:] == (max_h, max_w) else F.pad(m, (0, max_w - m.shape[-1], 0, max_h - m.shape[-2]))
        for m in masks
    ]


def _matched_target_masks(targets: Targets, indices: Indices) -> Tensor:
    """
    (R*T, H', W') the matched target masks in matching order (frames of a tube in a row),
    zero-padded to the largest size of the batch. Only the R matched masks are copied, once
    when all images have one size.
    """
    masks = [t["masks"] for t in targets]
    if any(m.shape[1:] != masks[0].shape[1:] for m in masks):
        return torch.cat(_pad_masks_to_max_size([m[J] for m, (_, J) in zip(masks, indices)])).flatten(0, -3)
    matched = masks[0].new_empty((sum(len(J) for _, J in indices), *masks[0].shape[1:]))
    start = 0
    for m, (_, J) in zip(masks, indices):
        torch.index_select(m, 0, J.to(m.device), out=matched[start : start + len(J)])
        start += len(J)
    return matched.flatten(0, -3)


class SetCriterion(nn.Module):
    """
    Hungarian-matching based losses: classification over all queries (with the "no object"
    class down-weighted by ``eos_coef``) and point-sampled mask losses over matched queries.
    Returns unweighted losses; the meta-architecture applies ``weight_dict``.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Dict[str, float],
        eos_coef: float,
        losses: Sequence[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
    ):
        """
        Args:
            num_classes: number of object categories, excluding "no object".
            matcher: module computing the query/target assignment.
            weight_dict: loss name -> weight (kept for the meta-architecture and repr).
            eos_coef: classification weight of the "no object" class.
            losses: loss groups to compute, among "labels" and "masks".
            num_points: number of points sampled per matched mask.
            oversample_ratio: over-sampling factor of the candidate points (>= 1).
            importance_sample_ratio: fraction of the points chosen by uncertainty (in [0, 1]).
        """
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        for loss in self.losses:
            if loss not in self._loss_map():
                raise ValueError(
                    f"SetCriterion: unknown loss {loss!r}; available: {sorted(self._loss_map())}"
                )
        empty_weight = torch.ones(self.num_classes + 1)
        empty_weight[-1] = self.eos_coef
        self.register_buffer("empty_weight", empty_weight)

        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def _loss_map(self) -> Dict[str, Callable]:
        return {"labels": self.loss_labels, "masks": self.loss_masks}

    def loss_labels(self, outputs: Outputs, targets: Targets, indices: Indices, num_masks: float) -> Losses:
        """
        Weighted cross-entropy over all queries; unmatched queries target "no object".
        Needs outputs["pred_logits"]: (B, Q, K+1).
        """
        assert "pred_logits" in outputs
        src_logits = outputs["pred_logits"].float()

        idx = self._get_src_permutation_idx(indices)
        target_classes_o = torch.cat(
            [t["labels"][J] for t, (_, J) in zip(targets, indices)]
        ).to(device=src_logits.device, dtype=torch.int64)
        target_classes = torch.full(
            src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=src_logits.device
        )
        target_classes[idx] = target_classes_o

        loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(self, outputs: Outputs, targets: Targets, indices: Indices, num_masks: float) -> Losses:
        """
        Sigmoid BCE and dice losses of matched masks at ``num_points`` uncertainty-sampled points.
        Needs outputs["pred_masks"]: (B, Q, H, W); targets' "masks": (N_b, H', W').

        Videos: outputs["pred_masks"] (B, Q, T, H, W) and targets' "masks" (N_b, T, H', W').
        Each matched tube is split into its T frame masks, each sampled at its own points; the
        losses are summed over the R*T frame masks and still divided by ``num_masks``.
        """
        assert "pred_masks" in outputs
        pred_masks = outputs["pred_masks"]
        for b, t in enumerate(targets):
            check_time_axis(pred_masks.shape[2:], t["masks"].shape[1:], f"SetCriterion: item {b}")
        src_idx = self._get_src_permutation_idx(indices)
        # (R, H, W), R = number of matched queries; tubes (R, T, H, W) become R*T frame masks
        src_masks = pred_masks[src_idx].flatten(0, -3)

        if src_masks.shape[0] == 0:
            # No target in the whole batch: keep the graph connected to pred_masks so that
            # every parameter still receives a (zero) gradient, e.g. for DDP.
            zero = pred_masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}

        target_masks = _matched_target_masks(targets, indices).to(src_masks)  # (R[*T], H', W')

        with torch.no_grad():
            point_coords = get_uncertain_point_coords_with_randomness(
                src_masks[:, None],
                calculate_uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )  # (R, P, 2)
            point_labels = masks_at_points(target_masks, point_coords)  # (R, P)

        loss_mask, loss_dice = PointMaskLosses.apply(src_masks, point_coords, point_labels, num_masks)
        return {"loss_mask": loss_mask, "loss_dice": loss_dice}

    @staticmethod
    def _get_src_permutation_idx(indices: Indices) -> Tuple[Tensor, Tensor]:
        """(batch index, query index) of every matched query, in matching order."""
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for (src, _) in indices])
        return batch_idx, src_idx

    def get_loss(
        self, loss: str, outputs: Outputs, targets: Targets, indices: Indices, num_masks: float
    ) -> Losses:
        loss_map = self._loss_map()
        if loss not in loss_map:
            raise ValueError(f"SetCriterion: unknown loss {loss!r}; available: {sorted(loss_map)}")
        return loss_map[loss](outputs, targets, indices, num_masks)

    def _num_masks(self, targets: Targets, device: torch.device) -> float:
        """Average number of target masks per process (>= 1), identical on all processes."""
        num_masks = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        world_size = comm.get_world_size()
        if world_size > 1:
            dist.all_reduce(num_masks)
        return torch.clamp(num_masks / world_size, min=1).item()

    def forward(self, outputs: Dict[str, object], targets: Targets) -> Losses:
        """
        Args:
            outputs: {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H, W),
                optionally "aux_outputs": list of dicts with the same two keys (one per
                intermediate decoder layer)}.
            targets: B dicts {"labels": (N_b,) int64, "masks": (N_b, H', W')}.

        Returns:
            unweighted losses: "loss_ce", "loss_mask", "loss_dice", and for the i-th auxiliary
            output the same names suffixed with f"_{i}".
        """
        outputs_without_aux = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        # The matcher and the mask losses of every decoder output read the target masks in the
        # predictions' dtype: convert them once here rather than three times per output.
        mask_dtype = outputs_without_aux["pred_masks"].dtype
        targets = [{**t, "masks": t["masks"].to(mask_dtype)} for t in targets]
        indices = self.matcher(outputs_without_aux, targets)

        device = outputs_without_aux["pred_logits"].device
        num_masks = self._num_masks(targets, device)

        losses: Losses = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, outputs_without_aux, targets, indices, num_masks))

        for i, aux_outputs in enumerate(outputs.get("aux_outputs", [])):
            aux_indices = self.matcher(aux_outputs, targets)
            for loss in self.losses:
                l_dict = self.get_loss(loss, aux_outputs, targets, aux_indices, num_masks)
                losses.update({f"{k}_{i}": v for k, v in l_dict.items()})
        return losses

    def _matcher_repr(self) -> str:
        try:
            return self.matcher.__repr__(_repr_indent=8)
        except TypeError:  # a matcher whose __repr__ takes no indent
            return repr(self.matcher)

    def __repr__(self) -> str:
        names = (
            "losses", "weight_dict", "num_classes", "eos_coef", "num_points", "oversample_ratio",
            "importance_sample_ratio",
        )
        fields = {"matcher": self._matcher_repr(), **{name: getattr(self, name) for name in names}}
        return indented_repr("Criterion " + self.__class__.__name__, fields, 4)
