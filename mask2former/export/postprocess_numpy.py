"""
Semantic, panoptic and instance inference of one image from an exported model's outputs, in
NumPy alone (neither torch nor detectron2 is imported): the computation of
:class:`~mask2former.modeling.postprocessing.PlainPostProcessor`, for a runtime that only has
the exported graph.

``settings`` is any object with the attributes of
:class:`~mask2former.modeling.postprocessing.InferenceSettings` (``semantic_on``,
``panoptic_on``, ``instance_on``, ``object_mask_threshold``, ``overlap_threshold``,
``test_topk_per_image``, ``sem_seg_postprocess_before_inference``), e.g. a
``types.SimpleNamespace`` filled from the config's ``MODEL.MASK_FORMER.TEST``.
"""
from typing import Dict, List, Optional, Tuple

import numpy as np

Size = Tuple[int, int]


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float32 weights of a 1D bilinear resize as PyTorch's ``interpolate`` computes
    it (``align_corners=False``, no antialiasing); the identity for equal sizes."""
    if in_size == out_size:
        return np.eye(in_size, dtype=np.float32)
    scale = np.float32(in_size / out_size)
    src = np.maximum((np.arange(out_size, dtype=np.float32) + 0.5) * scale - 0.5, 0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lo), 1 - frac)
    np.add.at(matrix, (rows, hi), frac)
    return matrix


def resize_chain_matrix(size: int, padded: int, crop: int, out: int) -> np.ndarray:
    """(out, size): resize ``size`` -> ``padded``, keep the first ``crop``, resize to ``out``
    (detectron2's ``sem_seg_postprocess`` after the resize to the padded size), per axis."""
    return bilinear_matrix(crop, out) @ bilinear_matrix(size, padded)[:crop]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def full_resolution_logits(
    mask_pred: np.ndarray, padded_size: Size, image_size: Size, output_size: Size
) -> np.ndarray:
    """(Q, h, w) mask logits -> (Q, H_out, W_out) through the padded size and the crop."""
    rows = resize_chain_matrix(mask_pred.shape[1], padded_size[0], image_size[0], output_size[0])
    cols = resize_chain_matrix(mask_pred.shape[2], padded_size[1], image_size[1], output_size[1])
    return np.einsum("yh,qhw,xw->qyx", rows, mask_pred.astype(np.float32), cols, optimize=True)


def panoptic_inference(
    mask_cls: np.ndarray, mask_prob: np.ndarray, is_thing: np.ndarray, settings
) -> Tuple[np.ndarray, List[Dict]]:
    """
    Args:
        mask_cls: (Q, K + 1) class logits; mask_prob: (Q, H, W) mask probabilities.
        is_thing: (K,) bool.
    Returns:
        (H, W) int32 segment ids (0 = void) and segments_info, as the model's panoptic output.
    """
    probs = softmax(mask_cls)
    scores, classes = probs.max(-1), probs.argmax(-1)
    keep = (classes != mask_cls.shape[-1] - 1) & (scores > settings.object_mask_threshold)
    scores, classes, mask_prob = scores[keep], classes[keep], mask_prob[keep]
    panoptic_seg = np.zeros(mask_prob.shape[-2:], dtype=np.int32)
    segments_info: List[Dict] = []
    if len(scores) == 0:
        return panoptic_seg, segments_info
    winner = (scores[:, None, None] * mask_prob).argmax(0)  # (H, W)
    own = mask_prob >= 0.5
    winner_covers = np.take_along_axis(own, winner[None], 0)[0]
    mask_area = np.bincount(winner.ravel(), minlength=len(scores))
    final_area = np.bincount(winner[winner_covers], minlength=len(scores))
    original_area = own.reshape(len(scores), -1).sum(1)
    segment_of_query = np.zeros(len(scores), dtype=np.int32)
    stuff_segment: Dict[int, int] = {}
    for k, (label, area, original, final) in enumerate(zip(classes, mask_area, original_area, final_area)):
        if min(area, original, final) <= 0 or area / original < settings.overlap_threshold:
            continue
        thing = bool(is_thing[label])
        if not thing and int(label) in stuff_segment:
            segment_of_query[k] = stuff_segment[int(label)]
            continue
        segment_of_query[k] = len(segments_info) + 1
        if not thing:
            stuff_segment[int(label)] = segment_of_query[k]
        segments_info.append({"id": len(segments_info) + 1, "isthing": thing, "category_id": int(label)})
    panoptic_seg = np.where(winner_covers, segment_of_query[winner], panoptic_seg).astype(np.int32)
    return panoptic_seg, segments_info


def instance_inference(
    mask_cls: np.ndarray, logits: np.ndarray, is_thing: Optional[np.ndarray], topk: int
) -> Dict[str, np.ndarray]:
    """
    The ``topk`` best (query, class) pairs (thing classes only when ``is_thing`` is given),
    scored by class probability times the mean mask probability inside the binary mask.

    Returns:
        {"scores": (N,), "pred_classes": (N,), "pred_masks": (N, H, W) bool, "pred_boxes": (N, 4)
        XYXY}, best score first.
    """
    num_classes = mask_cls.shape[-1] - 1
    probs = softmax(mask_cls)[:, :-1].ravel()
    order = np.argsort(-probs, kind="stable")[: min(topk, probs.size)]
    labels, queries = order % num_classes, order // num_classes
    if is_thing is not None:
        keep = is_thing[labels]
        order, labels, queries = order[keep], labels[keep], queries[keep]
    masks = logits[queries] > 0
    # sums over the pixels by axes: reshape(N, -1) fails for N = 0 (no thing class kept)
    inside = (sigmoid(logits[queries]) * masks).sum((1, 2))
    scores = probs[order] * inside / (masks.sum((1, 2)) + 1e-6)
    best_first = np.argsort(-scores, kind="stable")
    return {
        "scores": scores[best_first].astype(np.float32),
        "pred_classes": labels[best_first],
        "pred_masks": masks[best_first],
        "pred_boxes": mask_boxes(masks[best_first]),
    }


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """
    (N, H, W) bool masks -> (N, 4) float32 XYXY tight boxes, as the model gives them: x1 is the
    last column + 1 (rows alike); an empty mask gets zeros.
    """
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if len(rows):
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def postprocess(
    mask_cls: np.ndarray,
    mask_pred: np.ndarray,
    padded_size: Size,
    image_size: Size,
    output_size: Size,
    settings,
    is_thing: Optional[np.ndarray] = None,
) -> Dict:
    """
    Args:
        mask_cls: (Q, K + 1) class logits and mask_pred: (Q, h, w) mask logits of one image,
            as the exported graph returns them (one element of its batch).
        padded_size: the padded input size (a multiple of the size divisibility);
            image_size: the image's size in it; output_size: (height, width) of the outputs.
        settings: see the module doc.
        is_thing: (K,) bool, needed by panoptic inference; instance inference then keeps thing
            classes only.
    Returns:
        {"sem_seg": (K, H, W) float32, "panoptic_seg": ((H, W) int32, segments_info),
        "instances": dict of :func:`instance_inference`}, the ones turned on.
    """
    if settings.panoptic_on and is_thing is None:
        raise ValueError("panoptic inference needs is_thing, the (K,) bool thing-class mask")
    resize_to = output_size if settings.sem_seg_postprocess_before_inference else image_size
    logits = full_resolution_logits(mask_pred, padded_size, image_size, resize_to)
    result = {}
    if settings.semantic_on:
        sem_seg = np.einsum("qk,qhw->khw", softmax(mask_cls)[:, :-1], sigmoid(logits), optimize=True)
        if not settings.sem_seg_postprocess_before_inference:
            rows, cols = (bilinear_matrix(i, o) for i, o in zip(image_size, output_size))
            sem_seg = np.einsum("yh,khw,xw->kyx", rows, sem_seg, cols, optimize=True)
        result["sem_seg"] = sem_seg.astype(np.float32)
    if settings.panoptic_on:
        result["panoptic_seg"] = panoptic_inference(mask_cls, sigmoid(logits), is_thing, settings)
    if settings.instance_on:
        result["instances"] = instance_inference(mask_cls, logits, is_thing, settings.test_topk_per_image)
    return result
