"""
Turn one image's per-query predictions into semantic, panoptic and instance outputs
(detectron2 formats).

:class:`MaskPostProcessor` is the interface: class logits (Q, K + 1) (the last class is "no
object") and mask logits (Q, h, w) of one image, the padded batch size, the image's size in it
and the output size go in; {"sem_seg", "panoptic_seg", "instances"} come out, as configured.
Which queries panoptic inference keeps, the top-k instance selection, the segment assembly and
the instance scoring are done here, once, for both implementations; they differ only in how
they get the full-resolution semantic scores and the masks of the queries those steps need:

- :class:`PlainPostProcessor`: every query's logits resized to the padded size and through
  detectron2's ``sem_seg_postprocess``, as the original implementation does;
- :class:`BlockwisePostProcessor` (the default): the same maps from
  :func:`~mask2former.modeling.mask_resize.query_mask_outputs`, which never builds
  full-resolution logits of every query. Equal to the plain one up to float rounding.

:func:`build_mask_postprocessor` chooses between them by name.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch.nn import functional as F

from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Boxes, Instances

from .mask_resize import query_mask_outputs

Size = Tuple[int, int]


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
    for i in range(1, x.shape[0]):
        better = x[i] > best
        torch.maximum(best, x[i], out=best)
        index.masked_fill_(better, i)
    return index


def panoptic_segments(
    scores: torch.Tensor,
    classes: torch.Tensor,
    mask_prob: torch.Tensor,
    is_thing: torch.Tensor,
    overlap_threshold: float,
) -> Tuple[torch.Tensor, List[Dict]]:
    """
    Give each pixel to the kept query with the highest score * mask probability, drop segments
    mostly covered by others, and merge segments of one stuff class.

    Args:
        scores, classes: (N,) class probability and class of the kept queries, in query order.
        mask_prob: (N, H, W) their mask probabilities.
        is_thing: (K,) bool, whether each contiguous class id is a thing class.
        overlap_threshold: minimum fraction of a query's own mask (prob >= 0.5) it must keep.
    Returns:
        panoptic_seg (H, W) int32 segment ids (0 = void) and segments_info, a list of
        {"id", "isthing", "category_id"} in detectron2's format.
    """
    h, w = mask_prob.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=mask_prob.device)
    segments_info: List[Dict] = []
    num_kept = mask_prob.shape[0]
    if num_kept == 0:
        return panoptic_seg, segments_info

    cur_mask_ids = argmax_over_first_dim(scores.view(-1, 1, 1) * mask_prob)  # (H, W) winning query
    binary_masks = mask_prob >= 0.5
    # Whether the winning query's own mask covers the pixel.
    winner_covers = binary_masks.gather(0, cur_mask_ids[None])[0]
    ids_flat = cur_mask_ids.flatten()
    mask_area = torch.bincount(ids_flat, minlength=num_kept)
    original_area = binary_masks.flatten(1).sum(1)
    final_area = torch.bincount(ids_flat[winner_covers.flatten()], minlength=num_kept)

    # One host sync for the few per-segment scalars; the pixel work stays vectorised.
    mask_area_l = mask_area.tolist()
    original_area_l = original_area.tolist()
    final_area_l = final_area.tolist()
    classes_l = classes.tolist()
    is_thing_l = is_thing[classes].tolist()

    segment_of_query = [0] * num_kept
    stuff_segment: Dict[int, int] = {}
    current_segment_id = 0
    for k in range(num_kept):
        if not (mask_area_l[k] > 0 and original_area_l[k] > 0 and final_area_l[k] > 0):
            continue
        if mask_area_l[k] / original_area_l[k] < overlap_threshold:
            continue
        pred_class = classes_l[k]
        if not is_thing_l[k] and pred_class in stuff_segment:
            segment_of_query[k] = stuff_segment[pred_class]
            continue
        current_segment_id += 1
        segment_of_query[k] = current_segment_id
        if not is_thing_l[k]:
            stuff_segment[pred_class] = current_segment_id
        segments_info.append(
            {"id": current_segment_id, "isthing": bool(is_thing_l[k]), "category_id": int(pred_class)}
        )

    lookup = torch.tensor(segment_of_query, dtype=torch.int32, device=mask_prob.device)
    panoptic_seg = torch.where(winner_covers, lookup[cur_mask_ids], panoptic_seg)
    return panoptic_seg, segments_info


def select_instances(
    mask_cls: torch.Tensor, topk: int, thing_only: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    The ``topk`` highest (query, class) probabilities of one image.

    Args:
        mask_cls: (Q, K + 1) class logits.
        topk: number of instances (``TEST.DETECTIONS_PER_IMAGE``).
        thing_only: optional (K,) bool; when given, selections of other classes are dropped.
    Returns:
        class probabilities (N,), classes (N,) and query indices (N,), N <= topk.
    """
    num_classes = mask_cls.shape[-1] - 1
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    topk = min(topk, scores.numel())
    scores_per_image, topk_indices = scores.flatten(0, 1).topk(topk, sorted=False)
    labels_per_image = topk_indices % num_classes
    query_indices = topk_indices // num_classes
    if thing_only is not None:
        keep = thing_only[labels_per_image]
        scores_per_image = scores_per_image[keep]
        labels_per_image = labels_per_image[keep]
        query_indices = query_indices[keep]
    return scores_per_image, labels_per_image, query_indices


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


def instances_from_query_masks(
    class_scores: torch.Tensor,
    labels: torch.Tensor,
    binary_masks: torch.Tensor,
    mask_prob: torch.Tensor,
    instance_to_mask: torch.Tensor,
) -> Instances:
    """
    Instances scored by class probability times the mean mask probability inside the binary
    mask, with the binary mask's tight box. A query usually wins several (query, class) pairs:
    its mask, box and mask score are computed once.

    Args:
        class_scores, labels: (N,) class probability and class of each instance.
        binary_masks: (M, H, W) bool, mask logits > 0, of the queries the instances come from.
        mask_prob: (M, H, W) sigmoid of the same queries' mask logits.
        instance_to_mask: (N,) index into the M masks of each instance's query.
    Returns:
        Instances of image size (H, W) with pred_masks (N, H, W) float, pred_boxes (N, 4)
        (:func:`mask_boxes`), scores (N,) and pred_classes (N,).
    """
    # (M, HW) the binary masks as floats, converted once: the scores and pred_masks read them
    flat = binary_masks.flatten(1).to(mask_prob.dtype)
    # mean mask probability inside the binary mask, (M,): one dot product per mask
    inside = torch.bmm(mask_prob.flatten(1)[:, None, :], flat[:, :, None]).view(-1)
    mask_scores = inside / (flat.sum(1) + 1e-6)
    result = Instances(tuple(binary_masks.shape[-2:]))
    result.pred_masks = flat[instance_to_mask].view(-1, *binary_masks.shape[-2:])
    result.pred_boxes = Boxes(mask_boxes(binary_masks)[instance_to_mask])
    result.scores = class_scores.to(mask_prob.dtype) * mask_scores[instance_to_mask]
    result.pred_classes = labels
    return result


class QueryMasks(NamedTuple):
    """Full-resolution maps a post-processor computes; None where not asked for."""

    sem_seg: Optional[torch.Tensor]  # (K, H, W) sum over queries of class prob * mask prob
    panoptic_prob: Optional[torch.Tensor]  # (P, H, W) mask probabilities of the panoptic queries
    instance_prob: Optional[torch.Tensor]  # (U, H, W) mask probabilities of the instance queries
    instance_positive: Optional[torch.Tensor]  # (U, H, W) bool, their mask logits > 0


@dataclass(frozen=True)
class InferenceSettings:
    """
    What inference produces and how (``MODEL.MASK_FORMER.TEST``, ``TEST.DETECTIONS_PER_IMAGE``).

    semantic_on, panoptic_on, instance_on: which outputs are produced.
    object_mask_threshold, overlap_threshold: panoptic inference thresholds.
    test_topk_per_image: instances kept per image.
    sem_seg_postprocess_before_inference: resize mask logits to the output size before
    inference; False (semantic output only) resizes the semantic scores instead.
    """

    semantic_on: bool
    panoptic_on: bool
    instance_on: bool
    object_mask_threshold: float
    overlap_threshold: float
    test_topk_per_image: int
    sem_seg_postprocess_before_inference: bool = True

    def __post_init__(self):
        if not (self.semantic_on or self.panoptic_on or self.instance_on):
            raise ValueError("InferenceSettings: at least one of semantic_on, panoptic_on, instance_on must be True")
        if not self.sem_seg_postprocess_before_inference and not (
            self.semantic_on and not self.panoptic_on and not self.instance_on
        ):
            raise ValueError(
                "InferenceSettings: sem_seg_postprocess_before_inference=False is only for the "
                "semantic output alone (panoptic and instance inference need resized masks)"
            )


class MaskPostProcessor(ABC):
    """
    One image's outputs from its per-query predictions, as ``settings`` asks. Subclasses
    implement :meth:`query_masks`, the full-resolution maps; everything else is shared.
    """

    def __init__(self, settings: InferenceSettings):
        self.settings = settings

    @abstractmethod
    def query_masks(
        self,
        mask_pred: torch.Tensor,
        padded_size: Size,
        image_size: Size,
        output_size: Size,
        class_probs: Optional[torch.Tensor] = None,
        panoptic_queries: Optional[torch.Tensor] = None,
        instance_queries: Optional[torch.Tensor] = None,
    ) -> QueryMasks:
        """
        The maps of detectron2's resize chain of the (Q, h, w) mask logits: to ``padded_size``,
        crop to ``image_size``, to ``output_size``.

        Args:
            class_probs: (Q, K) class probabilities without "no object"; when given, the
                semantic scores are computed.
            panoptic_queries: (P,) query indices whose mask probabilities are returned.
            instance_queries: (U,) query indices whose mask probabilities and binary masks are
                returned.
        """

    def __call__(
        self,
        mask_cls: torch.Tensor,
        mask_pred: torch.Tensor,
        padded_size: Size,
        image_size: Size,
        output_size: Size,
        is_thing: Optional[torch.Tensor] = None,
    ) -> Dict:
        """
        Args:
            mask_cls: (Q, K + 1) class logits; mask_pred: (Q, h, w) mask logits.
            padded_size, image_size: the batch's padded input size and this image's size in it.
            output_size: (height, width) of the outputs.
            is_thing: (K,) bool, needed by panoptic inference; when given, instance inference
                keeps thing classes only.
        Returns:
            {"sem_seg": (K, H, W), "panoptic_seg": (ids (H, W), segments_info), "instances"},
            the ones turned on.
        """
        settings = self.settings
        class_probs = F.softmax(mask_cls, dim=-1)[:, :-1] if settings.semantic_on else None
        if not settings.sem_seg_postprocess_before_inference:
            # the image's part of the padded frame, then resized as sem_seg_postprocess resizes
            # the semantic scores (cropping commutes with the per-pixel class mixing)
            scores = self.query_masks(mask_pred, padded_size, image_size, image_size, class_probs).sem_seg
            if tuple(image_size) != tuple(output_size):
                scores = F.interpolate(scores[None], size=output_size, mode="bilinear", align_corners=False)[0]
            return {"sem_seg": scores}

        panoptic_queries = instance_queries = None
        if settings.panoptic_on:
            if is_thing is None:
                raise ValueError("panoptic inference needs is_thing, the (K,) bool thing-class mask")
            keep, query_scores, query_classes = confident_queries(mask_cls, settings.object_mask_threshold)
            panoptic_queries = keep.nonzero()[:, 0]  # in query order
        if settings.instance_on:
            scores, labels, queries = select_instances(mask_cls, settings.test_topk_per_image, is_thing)
            instance_queries, instance_to_unique = torch.unique(queries, return_inverse=True)
        masks = self.query_masks(
            mask_pred, padded_size, image_size, output_size, class_probs, panoptic_queries, instance_queries
        )
        result = {}
        if settings.semantic_on:
            result["sem_seg"] = masks.sem_seg
        if settings.panoptic_on:
            result["panoptic_seg"] = panoptic_segments(
                query_scores[keep], query_classes[keep], masks.panoptic_prob, is_thing, settings.overlap_threshold
            )
        if settings.instance_on:
            result["instances"] = instances_from_query_masks(
                scores, labels, masks.instance_positive, masks.instance_prob, instance_to_unique
            )
        return result


class PlainPostProcessor(MaskPostProcessor):
    """Every query's logits at full resolution, through detectron2's ``sem_seg_postprocess``:
    the original implementation's computation, simple and memory-hungry ((Q, H, W) logits)."""

    def query_masks(self, mask_pred, padded_size, image_size, output_size, class_probs=None,
                    panoptic_queries=None, instance_queries=None) -> QueryMasks:
        logits = F.interpolate(mask_pred[None], size=padded_size, mode="bilinear", align_corners=False)[0]
        logits = sem_seg_postprocess(logits, image_size, *output_size)  # (Q, H, W)
        sem_seg = panoptic_prob = instance_prob = instance_positive = None
        if class_probs is not None:
            sem_seg = torch.einsum("qc,qhw->chw", class_probs, logits.sigmoid())
        if panoptic_queries is not None:
            panoptic_prob = logits[panoptic_queries].sigmoid()
        if instance_queries is not None:
            instance_logits = logits[instance_queries]
            instance_positive, instance_prob = instance_logits > 0, instance_logits.sigmoid()
        return QueryMasks(sem_seg, panoptic_prob, instance_prob, instance_positive)


class BlockwisePostProcessor(MaskPostProcessor):
    """The maps a block of output rows at a time
    (:func:`~mask2former.modeling.mask_resize.query_mask_outputs`): the semantic scores are
    summed per block and full-resolution masks exist only for the queries an output reads."""

    def query_masks(self, mask_pred, padded_size, image_size, output_size, class_probs=None,
                    panoptic_queries=None, instance_queries=None) -> QueryMasks:
        needed = [q for q in (panoptic_queries, instance_queries) if q is not None]
        # one probability map per query that any output reads, in query order
        rows = torch.unique(torch.cat(needed)) if needed else None
        maps = query_mask_outputs(
            mask_pred, padded_size, image_size, output_size,
            class_probs=class_probs, prob_queries=rows, positive_queries=instance_queries,
        )

        def probs_of(queries: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if queries is None else maps.probs[torch.searchsorted(rows, queries)]

        return QueryMasks(maps.sem_seg, probs_of(panoptic_queries), probs_of(instance_queries), maps.positive)


POSTPROCESSORS = {"plain": PlainPostProcessor, "blockwise": BlockwisePostProcessor}


def build_mask_postprocessor(name: str, settings: InferenceSettings) -> MaskPostProcessor:
    """The post-processor ``name``: "blockwise" or "plain"."""
    if name not in POSTPROCESSORS:
        raise ValueError(f"postprocessor {name!r} is not one of {sorted(POSTPROCESSORS)}")
    return POSTPROCESSORS[name](settings)
