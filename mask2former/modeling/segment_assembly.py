"""
Panoptic segments and instances of one image from its queries' full-resolution masks, taken a
block of output rows at a time.

:class:`PanopticRows` and :class:`InstanceRows` receive the rows of the masks in order and keep
only what their outputs need: the winning query and its coverage per pixel (panoptic), the binary
masks and per-query sums (instances); :class:`SemanticLabels` keeps the winning class of the
semantic scores. Neither holds the float masks of all the rows at once, so
the memory of inference at a large output size is the outputs' own. A whole image is one block:
:func:`panoptic_segments` and :func:`instances_from_query_masks` are that case.
"""
from typing import Dict, List, Tuple

import torch
from torch.nn import functional as F

from detectron2.structures import Boxes, Instances

# the semantic output under MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT "labels": names that cannot be
# taken for detectron2's "sem_seg" (K, H, W) scores, which consumers argmax over the first dim
SEMANTIC_LABELS = "sem_seg_labels"  # (H, W) int64, the argmax over classes of the scores
SEMANTIC_LABEL_SCORES = "sem_seg_label_scores"  # (H, W), the score of that class

# pred_masks stay float 0/1 (the original's type) unless the image's instance masks would take
# more than this as floats; above it they are bool (detectron2's Mask R-CNN type, 4x smaller)
FLOAT_MASKS_MAX_BYTES = 1 << 30


def confident_queries(
    mask_cls: torch.Tensor, object_mask_threshold: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    The queries panoptic inference keeps: those whose most likely class is an object class
    with a probability above ``object_mask_threshold``.

    Returns:
        (Q,) bool keep, (Q,) best class probability and (Q,) best class of every query.
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(mask_cls.shape[-1] - 1) & (scores > object_mask_threshold)
    return keep, scores, labels


def argmax_over_first_dim(x: torch.Tensor) -> torch.Tensor:
    """
    ``x.argmax(0)`` for (N, H, W) maps, as a running maximum over the N maps: the same indices
    (the first of equal maxima), but each step reads contiguous maps where PyTorch's CPU
    reduction over a leading dimension strides through memory (about 4x slower measured at
    17 x 533 x 800). Returns (H, W) int64.
    """
    best = x[0].clone()
    index = torch.zeros(x.shape[1:], dtype=torch.long, device=x.device)
    update_argmax(best, index, x[1:], 1)
    return index


def update_argmax(best: torch.Tensor, index: torch.Tensor, x: torch.Tensor, first_index: int) -> None:
    """
    Continues a running argmax over maps: ``best`` and ``index`` (both (H, W)), the maximum and
    its index so far, are updated in place with the (N, H, W) maps ``x``, numbered from
    ``first_index``. Strictly greater values win, so that equal maxima keep the first index, as
    ``torch.argmax`` does.
    """
    for i in range(x.shape[0]):
        better = x[i] > best
        torch.maximum(best, x[i], out=best)
        index.masked_fill_(better, first_index + i)


class SemanticLabels:
    """
    The semantic output as a label map: the argmax over classes of the (K, H, W) semantic
    scores and the winning score per pixel, fed a piece at a time (blocks of rows, or of classes
    in order) so that the scores of every class never exist at the output size.

    Args:
        size: (H, W) of the output; dtype: of the scores.
    """

    def __init__(self, size: Tuple[int, int], dtype: torch.dtype, device: torch.device):
        self.labels = torch.zeros(size, dtype=torch.long, device=device)  # no class: label 0
        self.scores = torch.zeros(size, dtype=dtype, device=device)

    def add(self, scores: torch.Tensor, rows: slice = slice(None), first_class: int = 0) -> None:
        """
        The (k, n, W) scores of classes [first_class, first_class + k) at output ``rows``;
        a piece starting at class 0 starts those rows' argmax afresh.
        """
        best, index = self.scores[rows], self.labels[rows]
        if first_class == 0 and len(scores):
            best.copy_(scores[0])
            index.zero_()
            scores, first_class = scores[1:], 1
        update_argmax(best, index, scores, first_class)

    def result(self) -> Dict[str, torch.Tensor]:
        """{SEMANTIC_LABELS: (H, W) int64 labels, SEMANTIC_LABEL_SCORES: (H, W) their scores}."""
        return {SEMANTIC_LABELS: self.labels, SEMANTIC_LABEL_SCORES: self.scores}


def semantic_labels(predictions: Dict, with_scores: bool = False):
    """
    The (H, W) semantic labels of one image's predictions, from either form of the semantic
    output: ``predictions[SEMANTIC_LABELS]`` or the argmax over classes of ``"sem_seg"``
    (K, H, W). With ``with_scores``, (labels, (H, W) score of each pixel's label).
    """
    if SEMANTIC_LABELS in predictions:
        labels = predictions[SEMANTIC_LABELS]
        return (labels, predictions[SEMANTIC_LABEL_SCORES]) if with_scores else labels
    if "sem_seg" not in predictions:
        raise KeyError(
            f"the predictions have no semantic output (neither 'sem_seg' nor {SEMANTIC_LABELS!r}; "
            f"keys: {sorted(predictions)}): turn MODEL.MASK_FORMER.TEST.SEMANTIC_ON on"
        )
    scores = predictions["sem_seg"]
    labels = scores.argmax(dim=0)
    return (labels, scores.gather(0, labels[None])[0]) if with_scores else labels


class PanopticRows:
    """
    Panoptic inference: each pixel goes to the kept query with the highest score * mask
    probability, segments mostly covered by others are dropped and segments of one stuff class
    merged. Rows are added with :meth:`add`; :meth:`result` assembles the segments.

    Args:
        scores, classes: (N,) class probability and class of the kept queries, in query order.
        is_thing: (K,) bool, whether each contiguous class id is a thing class.
        overlap_threshold: minimum fraction of a query's own mask (prob >= 0.5) it must keep.
        size: (H, W) of the output.
    """

    def __init__(self, scores, classes, is_thing, overlap_threshold: float, size: Tuple[int, int]):
        self.scores, self.classes, self.is_thing = scores, classes, is_thing
        self.overlap_threshold = overlap_threshold
        num_kept, device = len(scores), scores.device
        self.winner = torch.zeros(size, dtype=torch.long, device=device)  # (H, W) winning query
        self.covers = torch.zeros(size, dtype=torch.bool, device=device)  # its own mask covers it
        # per kept query: pixels won, pixels of its own mask, pixels won and covered
        self.areas = torch.zeros((3, num_kept), dtype=torch.long, device=device)

    def add(self, y0: int, y1: int, mask_prob: torch.Tensor) -> None:
        """Rows [y0, y1) of the kept queries' mask probabilities, (N, y1 - y0, W)."""
        num_kept = len(self.scores)
        if num_kept == 0:
            return
        winner = argmax_over_first_dim(self.scores.view(-1, 1, 1) * mask_prob)
        binary = mask_prob >= 0.5
        covers = binary.gather(0, winner[None])[0]
        self.winner[y0:y1], self.covers[y0:y1] = winner, covers
        ids = winner.flatten()
        self.areas[0] += torch.bincount(ids, minlength=num_kept)
        self.areas[1] += binary.flatten(1).sum(1)
        self.areas[2] += torch.bincount(ids[covers.flatten()], minlength=num_kept)

    def result(self) -> Tuple[torch.Tensor, List[Dict]]:
        """panoptic_seg (H, W) int32 segment ids (0 = void) and segments_info, a list of
        {"id", "isthing", "category_id"} in detectron2's format."""
        num_kept = len(self.scores)
        segments_info: List[Dict] = []
        if num_kept == 0:
            return torch.zeros(self.winner.shape, dtype=torch.int32, device=self.winner.device), segments_info
        # one host sync for the few per-segment scalars; the pixel work stays vectorised
        mask_area, original_area, final_area = self.areas.tolist()
        classes_l = self.classes.tolist()
        is_thing_l = self.is_thing[self.classes].tolist()
        segment_of_query = [0] * num_kept
        stuff_segment: Dict[int, int] = {}
        for k in range(num_kept):
            if not (mask_area[k] > 0 and original_area[k] > 0 and final_area[k] > 0):
                continue
            if mask_area[k] / original_area[k] < self.overlap_threshold:
                continue
            pred_class = classes_l[k]
            if not is_thing_l[k] and pred_class in stuff_segment:
                segment_of_query[k] = stuff_segment[pred_class]
                continue
            segment_of_query[k] = len(segments_info) + 1
            if not is_thing_l[k]:
                stuff_segment[pred_class] = segment_of_query[k]
            segments_info.append(
                {"id": segment_of_query[k], "isthing": bool(is_thing_l[k]), "category_id": int(pred_class)}
            )
        lookup = torch.tensor(segment_of_query, dtype=torch.int32, device=self.winner.device)
        return torch.where(self.covers, lookup[self.winner], 0).to(torch.int32), segments_info


def panoptic_segments(
    scores: torch.Tensor,
    classes: torch.Tensor,
    mask_prob: torch.Tensor,
    is_thing: torch.Tensor,
    overlap_threshold: float,
) -> Tuple[torch.Tensor, List[Dict]]:
    """:class:`PanopticRows` of (N, H, W) mask probabilities given whole."""
    merge = PanopticRows(scores, classes, is_thing, overlap_threshold, tuple(mask_prob.shape[-2:]))
    merge.add(0, mask_prob.shape[-2], mask_prob)
    return merge.result()


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """
    Tight boxes of (M, H, W) bool masks: (M, 4) float32 XYXY in the convention of detectron2's
    ``BitMasks.get_bounding_boxes`` (x0 = first column, x1 = last column + 1, rows alike; an
    empty mask gets zeros). From each mask's row and column projections, reduced as uint8 (a
    max over bytes is several times faster than ``any`` on bools on the CPU).
    """
    # the JIT tracer (fvcore's flop count) has no dtype view: it gets a copy
    occupied = masks.to(torch.uint8) if torch.jit.is_tracing() else masks.view(torch.uint8)
    x0, x1 = _extents(occupied.amax(1) > 0)
    y0, y1 = _extents(occupied.amax(2) > 0)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
    return torch.where((x1 > 0)[:, None], boxes, torch.zeros_like(boxes))


def _extents(occupied: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """First occupied index and last occupied index + 1 of (M, L) bool; (L, 0) where empty."""
    index = torch.arange(occupied.shape[1], device=occupied.device)
    first = torch.where(occupied, index, occupied.shape[1]).amin(1)
    end = torch.where(occupied, index + 1, 0).amax(1)
    return first, end


def instances_of_masks(
    class_scores: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, inside: torch.Tensor,
    area: torch.Tensor, dtype: torch.dtype = torch.float32,
) -> Instances:
    """
    Instances scored by class probability times the mean mask probability inside the binary
    mask, with the binary mask's tight box.

    Args:
        class_scores, labels: (N,) class probability and class of each instance.
        masks: (N, H, W) bool, the instances' binary masks (mask logits > 0).
        inside, area: (N,) sum of each instance's mask probability over its binary mask, and
            the binary mask's area.
    Returns:
        Instances of image size (H, W) with pred_masks (N, H, W) (float 0/1, or bool above
        :data:`FLOAT_MASKS_MAX_BYTES`), pred_boxes (N, 4) (:func:`mask_boxes`), scores (N,)
        and pred_classes (N,).
    """
    result = Instances(tuple(masks.shape[-2:]))
    float_bytes = masks.numel() * torch.finfo(dtype).bits // 8
    result.pred_masks = masks if float_bytes > FLOAT_MASKS_MAX_BYTES else masks.to(dtype)
    result.pred_boxes = Boxes(mask_boxes(masks))
    result.scores = class_scores.to(dtype) * (inside / (area.to(inside.dtype) + 1e-6)).to(dtype)
    result.pred_classes = labels
    return result


def instances_from_query_masks(
    class_scores: torch.Tensor,
    labels: torch.Tensor,
    binary_masks: torch.Tensor,
    mask_prob: torch.Tensor,
    instance_to_mask: torch.Tensor,
) -> Instances:
    """
    :func:`instances_of_masks` of whole query masks; several instances may share a query's mask.

    Args:
        binary_masks: (M, H, W) bool, mask logits > 0, of the queries the instances come from.
        mask_prob: (M, H, W) sigmoid of the same queries' mask logits.
        instance_to_mask: (N,) index into the M masks of each instance's query.
    """
    inside, area = _mask_sums(mask_prob.flatten(1), binary_masks.flatten(1))
    return instances_of_masks(
        class_scores, labels, binary_masks[instance_to_mask], inside[instance_to_mask],
        area[instance_to_mask], mask_prob.dtype,
    )


def _mask_sums(probs: torch.Tensor, binary: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(M, L) probabilities and (M, L) bool masks: (M,) sum of the probabilities inside each
    mask (one dot product per mask) and (M,) the mask's area, both of the probabilities' dtype."""
    flat = binary.to(probs.dtype)
    return torch.bmm(probs[:, None, :], flat[:, :, None]).view(-1), flat.sum(1)


class InstanceRows:
    """
    The binary masks (logits > 0) of the instances' queries, one bool mask per instance, and the
    sums of their probabilities inside them, from rows of every query's mask logits. The work is
    done once per distinct query; an instance's rows are a copy of its query's.

    Args:
        queries: (N,) the query of each instance (a query may serve several instances).
        size: (H, W) of the output.
    """

    def __init__(self, queries: torch.Tensor, size: Tuple[int, int], dtype: torch.dtype):
        self.unique, self.instance_of = torch.unique(queries, return_inverse=True)
        device = queries.device
        self.masks = torch.empty((len(queries), *size), dtype=torch.bool, device=device)
        # inside, area; summed over the blocks in float64, so that many blocks round as one
        self.sums = torch.zeros((2, len(self.unique)), dtype=torch.float64, device=device)
        self.dtype = dtype
        self._positive = None  # (U, n, W) the current rows' binary masks of the distinct queries

    def add_logits(self, y0: int, y1: int, logits: torch.Tensor) -> None:
        """Rows [y0, y1) of every query's mask logits, (y1 - y0, Q, W)."""
        n, _, width = logits.shape
        self._positive = torch.empty((len(self.unique), n, width), dtype=torch.bool, device=logits.device)
        torch.gt(logits[:, self.unique].transpose(0, 1), 0, out=self._positive)
        self.masks[:, y0:y1] = self._positive[self.instance_of]

    def add_probs(self, y0: int, y1: int, probs: torch.Tensor) -> None:
        """The same rows' mask probabilities, (y1 - y0, Q, W), after :meth:`add_logits`."""
        # flatten(1), not view(U, -1): U is 0 when no instance is kept (e.g. only stuff classes won)
        rows = probs[:, self.unique].transpose(0, 1).flatten(1)
        inside, area = _mask_sums(rows, self._positive.flatten(1))
        self.sums += torch.stack([inside, area]).to(self.sums.dtype)
        self._positive = None

    def result(self, class_scores: torch.Tensor, labels: torch.Tensor) -> Instances:
        inside, area = self.sums[:, self.instance_of]
        return instances_of_masks(class_scores, labels, self.masks, inside, area, self.dtype)
