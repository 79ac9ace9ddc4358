"""
Semantic, panoptic and instance inference of one image from an exported model's outputs, in
NumPy alone (neither torch nor detectron2 is imported): the results of
:class:`~mask2former.modeling.postprocessing.MaskPostProcessor`, for a runtime that only has
the exported graph. This file is self-contained so that it can be shipped beside
``demo/onnx_predictor.py``.

It computes as :func:`~mask2former.modeling.mask_resize.query_mask_outputs` does: the resize
chain of the mask logits (to the padded size, crop to the image, to the output size) is one
banded matrix per axis; the columns are resized once at the logits' few rows, then the rows a
block at a time. Each block's logits of every query are used while they are in the cache by
its dense step (:func:`dense_block`): the semantic scores of its rows, and the probabilities and
binary masks of the few queries the panoptic and instance outputs keep; the accumulators then
take the panoptic winner of each pixel and the instance masks' extents. No (Q, H, W) array is
ever built. The dense step can be replaced by one that computes the same (``postprocess``'s
``dense``): demo/onnx_predictor.py runs it with onnxruntime (``postprocess_graph.py``).

``settings`` is any object with the attributes of
:class:`~mask2former.modeling.postprocessing.InferenceSettings` (``semantic_on``,
``panoptic_on``, ``instance_on``, ``object_mask_threshold``, ``overlap_threshold``,
``test_topk_per_image``, ``sem_seg_postprocess_before_inference``), e.g. a
``types.SimpleNamespace`` filled from ``export_info.json``'s "settings".
"""
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

Size = Tuple[int, int]
# (rows, columns, mixing, panoptic_queries, instance_queries, scores_out) ->
# (panoptic_probs, instance_masks, instance_inside): see dense_block
DenseBlock = Callable[[np.ndarray, np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray, Optional[np.ndarray]],
                      Tuple[np.ndarray, np.ndarray, np.ndarray]]
# Output rows per block are chosen so that a block's logits of every query take about this
# many bytes: small enough to stay in the cache, large enough for efficient GEMMs.
BLOCK_BYTES = 4 << 20
# Output columns per GEMM of the column resize.
COLUMN_BLOCK = 64


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
    to_padded = bilinear_matrix(size, padded)[:crop]
    if crop == out:  # the identity's product, without its (out, out, size) multiply-adds
        return to_padded  # leading rows of a fresh matrix: contiguous, the caller's own
    return bilinear_matrix(crop, out) @ to_padded


def resize_bands(matrix: np.ndarray, block: int) -> List[Tuple[int, int, int, int]]:
    """
    For an (O, I) resize matrix, the blocks of ``block`` outputs: (o0, o1, i0, i1) where inputs
    [i0, i1) hold every non-zero weight of outputs [o0, o1). Bilinear weights are local, so a
    block reads a narrow band of the input.
    """
    bands = []
    for o0 in range(0, matrix.shape[0], block):
        read = np.flatnonzero(matrix[o0 : o0 + block].any(0))
        bands.append((o0, min(o0 + block, matrix.shape[0]), int(read[0]), int(read[-1]) + 1))
    return bands


def resize_columns(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, w) -> (N, W) = x @ matrix.T for an (W, w) resize matrix, one GEMM per block of
    output columns over the band of input columns it reads."""
    out = np.empty((x.shape[0], matrix.shape[0]), dtype=np.float32)
    for o0, o1, i0, i1 in resize_bands(matrix, COLUMN_BLOCK):
        out[:, o0:o1] = x[:, i0:i1] @ matrix[o0:o1, i0:i1].T
    return out


def resize_maps(maps: np.ndarray, output_size: Size) -> np.ndarray:
    """(C, H, W) -> (C, H_out, W_out), bilinear as PyTorch's ``interpolate``."""
    channels, height, width = maps.shape
    rows = bilinear_matrix(height, output_size[0])
    by_column = resize_columns(maps.reshape(channels * height, width), bilinear_matrix(width, output_size[1]))
    by_column = by_column.reshape(channels, height, output_size[1])
    out = np.empty((channels, *output_size), dtype=np.float32)
    for y0, y1, j0, j1 in resize_bands(rows, COLUMN_BLOCK):
        out[:, y0:y1] = np.matmul(rows[y0:y1, j0:j1], by_column[:, j0:j1])
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function of ``x``, as a new array (in place from its first step: no
    temporaries, called on every block)."""
    out = np.negative(x)
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88 gives the right 0
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def dense_block(
    rows: np.ndarray, columns: np.ndarray, mixing: Optional[np.ndarray], panoptic_queries: np.ndarray,
    instance_queries: np.ndarray, scores_out: Optional[np.ndarray],
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    The dense step of one block of output rows: what the semantic, panoptic and instance
    inference need of its mask logits, and nothing of the other queries.

    Args:
        rows: (n, j) weights of the block's rows over the j column-resized rows it reads.
        columns: (Q, j, W) those rows of every query, resized along the columns.
        mixing: (K, Q) class probabilities of the queries, or None (no semantic output).
        panoptic_queries: (P,) int64 queries the panoptic inference keeps (may be empty).
        instance_queries: (U,) int64 queries the instance inference keeps (may be empty).
        scores_out: (K, n * W) where the block's semantic scores go (with ``mixing``).
    Returns:
        panoptic_probs (P, n, W) mask probabilities, instance_masks (U, n, W) bool (logits > 0)
        and instance_inside (U,) the sum of each one's probabilities inside its mask.
    """
    logits = np.matmul(rows, columns)  # (Q, n, W)
    instance_masks = logits[instance_queries] > 0
    if mixing is not None:
        probs = sigmoid(logits)
        np.matmul(mixing, probs.reshape(len(probs), -1), out=scores_out)
        panoptic_probs, instance_probs = probs[panoptic_queries], probs[instance_queries]
    else:  # only the kept queries' probabilities
        panoptic_probs, instance_probs = sigmoid(logits[panoptic_queries]), sigmoid(logits[instance_queries])
    instance_inside = np.where(instance_masks, instance_probs, 0).sum((1, 2), dtype=np.float64)
    return panoptic_probs, instance_masks, instance_inside


def resize_plan(
    mask_pred: np.ndarray, padded_size: Size, image_size: Size, output_size: Size,
    rows_per_block: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, int, int, int]]]:
    """
    The (Q, h, w) mask logits' resize chain (to the padded size, crop to the image, to the
    output size), split by axis: the columns resized once, at the input's few rows, and the
    rows a block of output rows at a time.

    Returns:
        rows (H_out, h) the row resize, by_column (Q, h, W_out) the logits resized along the
        columns, and the blocks (y0, y1, j0, j1): output rows [y0, y1) read rows [j0, j1) of
        ``by_column``; blocks of ``rows_per_block`` rows (default: about ``BLOCK_BYTES`` of
        logits).
    """
    num_queries, h, w = mask_pred.shape
    out_h, out_w = output_size
    rows = resize_chain_matrix(h, padded_size[0], image_size[0], out_h)  # (H, h)
    cols = resize_chain_matrix(w, padded_size[1], image_size[1], out_w)  # (W, w)
    if rows_per_block is None:
        rows_per_block = BLOCK_BYTES // max(1, 4 * num_queries * out_w)
    rows_per_block = max(1, min(rows_per_block, out_h))
    by_column = resize_columns(np.asarray(mask_pred, dtype=np.float32).reshape(num_queries * h, w), cols)
    return rows, by_column.reshape(num_queries, h, out_w), resize_bands(rows, rows_per_block)


class PanopticAccumulator:
    """
    Panoptic inference a block at a time: each pixel goes to the kept query with the highest
    score * mask probability; the per-query areas (all pixels won, pixels won inside its own
    mask, its own mask) are summed over the blocks, and the segments are assembled at the end.
    """

    def __init__(self, class_probs: np.ndarray, is_thing: np.ndarray, settings, output_size: Size):
        """class_probs: (Q, K + 1) class probabilities of every query; is_thing: (K,) bool."""
        scores, classes = class_probs.max(-1), class_probs.argmax(-1)
        keep = (classes != class_probs.shape[-1] - 1) & (scores > settings.object_mask_threshold)
        self.queries = np.flatnonzero(keep)  # in query order, as the model keeps them
        self.scores = scores[keep].astype(np.float32)
        self.classes = classes[keep]
        self.is_thing = is_thing
        self.overlap_threshold = settings.overlap_threshold
        self.winner = np.zeros(output_size, dtype=np.int64)
        self.winner_covers = np.zeros(output_size, dtype=bool)
        self.mask_area = np.zeros(len(self.queries), dtype=np.int64)
        self.final_area = np.zeros(len(self.queries), dtype=np.int64)
        self.original_area = np.zeros(len(self.queries), dtype=np.int64)

    def add(self, y0: int, y1: int, kept: np.ndarray) -> None:
        """kept: (P, y1 - y0, W) mask probabilities of the kept queries (``self.queries``) at
        output rows [y0, y1)."""
        if len(self.queries) == 0:
            return
        winner = (kept * self.scores[:, None, None]).argmax(0)  # (n, W), the first of equal maxima
        own = kept >= 0.5
        covers = np.take_along_axis(own, winner[None], 0)[0]
        self.winner[y0:y1], self.winner_covers[y0:y1] = winner, covers
        self.mask_area += np.bincount(winner.ravel(), minlength=len(self.queries))
        self.final_area += np.bincount(winner[covers], minlength=len(self.queries))
        self.original_area += own.sum((1, 2))

    def result(self) -> Tuple[np.ndarray, List[Dict]]:
        """(H, W) int32 segment ids (0 = void) and segments_info, as the model's panoptic output."""
        segments_info: List[Dict] = []
        segment_of_query = np.zeros(len(self.queries), dtype=np.int32)
        stuff_segment: Dict[int, int] = {}
        for k, (label, area, original, final) in enumerate(
            zip(self.classes.tolist(), self.mask_area, self.original_area, self.final_area)
        ):
            if min(area, original, final) <= 0 or area / original < self.overlap_threshold:
                continue
            thing = bool(self.is_thing[label])
            if not thing and label in stuff_segment:
                segment_of_query[k] = stuff_segment[label]
                continue
            segment_of_query[k] = len(segments_info) + 1
            if not thing:
                stuff_segment[label] = segment_of_query[k]
            segments_info.append({"id": len(segments_info) + 1, "isthing": thing, "category_id": label})
        if len(self.queries) == 0:
            return np.zeros(self.winner.shape, dtype=np.int32), segments_info
        return np.where(self.winner_covers, segment_of_query[self.winner], 0).astype(np.int32), segments_info


def select_instances(
    class_probs: np.ndarray, is_thing: Optional[np.ndarray], topk: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    The ``topk`` best (query, class) pairs of (Q, K + 1) class probabilities, of thing classes
    only when ``is_thing`` is given: (N,) class probabilities, classes and queries.
    """
    num_classes = class_probs.shape[-1] - 1
    probs = class_probs[:, :-1].ravel()
    order = np.argsort(-probs, kind="stable")[: min(topk, probs.size)]
    labels, queries = order % num_classes, order // num_classes
    if is_thing is not None:
        keep = is_thing[labels]
        order, labels, queries = order[keep], labels[keep], queries[keep]
    return probs[order], labels, queries


class InstanceAccumulator:
    """
    Instance inference a block at a time: the binary masks (logits > 0) of the queries the
    ``topk`` best (query, class) pairs come from, their row and column extents (the boxes) and
    the sum of their probabilities inside the mask (the mask score); each query once.
    """

    def __init__(self, class_probs: np.ndarray, is_thing: Optional[np.ndarray], topk: int, output_size: Size):
        self.class_scores, self.labels, queries = select_instances(class_probs, is_thing, topk)
        self.queries, self.instance_to_query = np.unique(queries, return_inverse=True)
        count = len(self.queries)
        self.masks = np.zeros((count, *output_size), dtype=bool)
        self.rows_occupied = np.zeros((count, output_size[0]), dtype=bool)
        self.columns_occupied = np.zeros((count, output_size[1]), dtype=bool)
        self.area = np.zeros(count, dtype=np.int64)
        self.inside = np.zeros(count, dtype=np.float64)

    def add(self, y0: int, y1: int, masks: np.ndarray, inside: np.ndarray) -> None:
        """masks: (U, y1 - y0, W) bool binary masks (logits > 0) of ``self.queries`` at output
        rows [y0, y1); inside: (U,) the sum of their probabilities inside those masks."""
        self.masks[:, y0:y1] = masks
        self.rows_occupied[:, y0:y1] = masks.any(2)
        self.columns_occupied |= masks.any(1)
        self.area += masks.sum((1, 2))
        self.inside += inside

    def result(self) -> Dict[str, np.ndarray]:
        """{"scores": (N,), "pred_classes": (N,), "pred_masks": (N, H, W) bool, "pred_boxes":
        (N, 4) XYXY}, best score first; scored by class probability times the mean mask
        probability inside the binary mask."""
        mask_scores = (self.inside / (self.area + 1e-6)).astype(np.float32)
        scores = self.class_scores.astype(np.float32) * mask_scores[self.instance_to_query]
        best_first = np.argsort(-scores, kind="stable")
        query_of = self.instance_to_query[best_first]
        return {
            "scores": scores[best_first],
            "pred_classes": self.labels[best_first],
            "pred_masks": self.masks[query_of],
            "pred_boxes": occupied_boxes(self.rows_occupied, self.columns_occupied)[query_of],
        }


def occupied_boxes(rows_occupied: np.ndarray, columns_occupied: np.ndarray) -> np.ndarray:
    """
    (N, 4) float32 XYXY tight boxes of N masks from their (N, H) row and (N, W) column
    occupancy, as the model gives them: x1 is the last column + 1 (rows alike); an empty mask
    gets zeros.
    """
    def extents(occupied: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        first = occupied.argmax(1)
        end = occupied.shape[1] - occupied[:, ::-1].argmax(1)
        return first, end

    (x0, x1), (y0, y1) = extents(columns_occupied), extents(rows_occupied)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)
    boxes[~columns_occupied.any(1)] = 0
    return boxes


def postprocess(
    mask_cls: np.ndarray,
    mask_pred: np.ndarray,
    padded_size: Size,
    image_size: Size,
    output_size: Size,
    settings,
    is_thing: Optional[np.ndarray] = None,
    rows_per_block: Optional[int] = None,
    dense: DenseBlock = dense_block,
) -> Dict:
    """
    Args:
        mask_cls: (Q, K + 1) class logits and mask_pred: (Q, h, w) mask logits of one image,
            as the exported graph returns them (one element of its batch).
        padded_size: the padded input size (a multiple of the size divisibility);
            image_size: the image's size in it; output_size: (height, width) of the outputs.
        settings: see the module doc.
        is_thing: (K,) bool, needed by panoptic inference; instance inference then keeps thing
            classes only (as the model, which passes it only when panoptic inference is on).
        rows_per_block: output rows per block (default: about ``BLOCK_BYTES`` of logits).
        dense: the dense step of a block, :func:`dense_block` or one that computes the same
            (demo/onnx_predictor.py runs the graph of ``postprocess_graph.py`` with onnxruntime).
    Returns:
        {"sem_seg": (K, H, W) float32, "panoptic_seg": ((H, W) int32, segments_info),
        "instances": dict of :meth:`InstanceAccumulator.result`}, the ones turned on.
    """
    if settings.panoptic_on and is_thing is None:
        raise ValueError("panoptic inference needs is_thing, the (K,) bool thing-class mask")
    class_probs = softmax(np.asarray(mask_cls, dtype=np.float32))
    # without resizing before inference (semantic output only), the scores are computed at the
    # image size and resized after, as sem_seg_postprocess resizes them
    before = settings.sem_seg_postprocess_before_inference
    size = tuple(output_size) if before else tuple(image_size)
    sem_seg = panoptic = instances = mixing = None
    if settings.semantic_on:
        sem_seg = np.empty((class_probs.shape[1] - 1, *size), dtype=np.float32)
        mixing = np.ascontiguousarray(class_probs[:, :-1].T)  # (K, Q)
    if settings.panoptic_on and before:
        panoptic = PanopticAccumulator(class_probs, is_thing, settings, size)
    if settings.instance_on and before:
        instances = InstanceAccumulator(class_probs, is_thing, settings.test_topk_per_image, size)
    rows, by_column, blocks = resize_plan(mask_pred, padded_size, image_size, size, rows_per_block)
    scores = sem_seg.reshape(len(sem_seg), -1) if sem_seg is not None else None  # (K, H * W)
    no_query = np.zeros(0, dtype=np.int64)
    panoptic_queries = panoptic.queries.astype(np.int64) if panoptic is not None else no_query
    instance_queries = instances.queries.astype(np.int64) if instances is not None else no_query
    for y0, y1, j0, j1 in blocks:
        panoptic_probs, instance_masks, instance_inside = dense(
            rows[y0:y1, j0:j1], by_column[:, j0:j1], mixing, panoptic_queries, instance_queries,
            None if scores is None else scores[:, y0 * size[1] : y1 * size[1]])
        if panoptic is not None:
            panoptic.add(y0, y1, panoptic_probs)
        if instances is not None:
            instances.add(y0, y1, instance_masks, instance_inside)
    result = {}
    if sem_seg is not None:
        result["sem_seg"] = sem_seg if size == tuple(output_size) else resize_maps(sem_seg, tuple(output_size))
    if panoptic is not None:
        result["panoptic_seg"] = panoptic.result()
    if instances is not None:
        result["instances"] = instances.result()
    return result
