"""
Turn per-query predictions into semantic, panoptic and instance outputs (detectron2 formats).

All three take one image's class logits ``mask_cls`` (Q, K + 1) (the last class is "no object")
and mask logits ``mask_pred`` (Q, H, W).
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch.nn import functional as F

from detectron2.structures import Boxes, Instances


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """
    Per-pixel class scores: sum over queries of class probability times mask probability.
    ``MaskFormer`` computes the same sum a block of rows at a time
    (:func:`~mask2former.modeling.mask_resize.query_mask_outputs`); this is the literal form.

    Returns:
        (K, H, W) scores.
    """
    mask_cls = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", mask_cls, mask_pred.sigmoid())


def _confident_queries(
    mask_cls: torch.Tensor, object_mask_threshold: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Q,) bool keep, (Q,) best class probability and (Q,) best class of every query."""
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(mask_cls.shape[-1] - 1) & (scores > object_mask_threshold)
    return keep, scores, labels


def panoptic_queries(mask_cls: torch.Tensor, object_mask_threshold: float) -> torch.Tensor:
    """(Q,) bool: the queries panoptic inference keeps, those whose most likely class is an
    object class with a probability above ``object_mask_threshold``."""
    return _confident_queries(mask_cls, object_mask_threshold)[0]


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


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: Optional[torch.Tensor],
    is_thing: torch.Tensor,
    object_mask_threshold: float,
    overlap_threshold: float,
    mask_prob: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, List[Dict]]:
    """
    Keep confident queries, give each pixel to the query with the highest score * mask
    probability, drop segments mostly covered by others, and merge segments of one stuff class.

    Args:
        is_thing: (K,) bool, whether each contiguous class id is a thing class.
        object_mask_threshold: minimum class score of a kept query.
        overlap_threshold: minimum fraction of a query's own mask (prob >= 0.5) it must keep.
        mask_prob: optional (Q, H, W) ``mask_pred.sigmoid()``, when the caller already has it
            (``mask_pred`` may then be None).
    Returns:
        panoptic_seg (H, W) int32 segment ids (0 = void) and segments_info, a list of
        {"id", "isthing", "category_id"} in detectron2's format.
    """
    keep, scores, labels = _confident_queries(mask_cls, object_mask_threshold)
    cur_scores = scores[keep]
    cur_classes = labels[keep]
    # only the kept queries' masks go through the sigmoid
    cur_masks = mask_prob[keep] if mask_prob is not None else mask_pred[keep].sigmoid()

    h, w = cur_masks.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=cur_masks.device)
    segments_info: List[Dict] = []
    num_kept = cur_masks.shape[0]
    if num_kept == 0:
        return panoptic_seg, segments_info

    cur_prob_masks = cur_scores.view(-1, 1, 1) * cur_masks
    cur_mask_ids = argmax_over_first_dim(cur_prob_masks)  # (H, W) index of the winning query
    binary_masks = cur_masks >= 0.5
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
    classes_l = cur_classes.tolist()
    is_thing_l = is_thing[cur_classes].tolist()

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

    lookup = torch.tensor(segment_of_query, dtype=torch.int32, device=cur_masks.device)
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


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    topk: int,
    thing_only: Optional[torch.Tensor] = None,
) -> Instances:
    """
    The ``topk`` highest (query, class) scores, each an instance with the query's binary mask.
    Scores are the class probability times the mean mask probability inside the binary mask.

    Args:
        topk: number of instances per image (``TEST.DETECTIONS_PER_IMAGE``).
        thing_only: optional (K,) bool; when given, instances of other classes are dropped
            (used when panoptic inference is also on, so stuff classes give no instances).
    Returns:
        Instances of image size (H, W) with pred_masks (N, H, W) float, pred_boxes (zeros),
        scores (N,) and pred_classes (N,).
    """
    scores, labels, queries = select_instances(mask_cls, topk, thing_only)
    # a query usually wins several of the top-k (query, class) pairs: its mask and mask
    # score are computed once
    unique_queries, instance_to_unique = torch.unique(queries, return_inverse=True)
    logits = mask_pred[unique_queries]
    return instances_from_query_masks(scores, labels, logits > 0, logits.sigmoid(), instance_to_unique)


def instances_from_query_masks(
    class_scores: torch.Tensor,
    labels: torch.Tensor,
    binary_masks: torch.Tensor,
    mask_prob: torch.Tensor,
    instance_to_mask: torch.Tensor,
) -> Instances:
    """
    Args:
        class_scores, labels: (N,) class probability and class of each instance.
        binary_masks: (M, H, W) bool, mask logits > 0, of the queries the instances come from.
        mask_prob: (M, H, W) sigmoid of the same queries' mask logits.
        instance_to_mask: (N,) index into the M masks of each instance's query.
    Returns:
        Instances as :func:`instance_inference` describes.
    """
    # (M, HW) the binary masks as floats, converted once: the scores and pred_masks read them
    flat = binary_masks.flatten(1).to(mask_prob.dtype)
    # mean mask probability inside the binary mask, (M,): one dot product per mask
    inside = torch.bmm(mask_prob.flatten(1)[:, None, :], flat[:, :, None]).view(-1)
    mask_scores = inside / (flat.sum(1) + 1e-6)
    result = Instances(tuple(binary_masks.shape[-2:]))
    result.pred_masks = flat[instance_to_mask].view(-1, *binary_masks.shape[-2:])
    result.pred_boxes = Boxes(torch.zeros(len(labels), 4, device=binary_masks.device))
    result.scores = class_scores * mask_scores[instance_to_mask]
    result.pred_classes = labels
    return result
