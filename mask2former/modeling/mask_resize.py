"""
Query mask logits at the output size, a block of output rows at a time.

Inference turns each query's (h, w) mask logits into full-resolution maps the way detectron2's
``sem_seg_postprocess`` does: a bilinear resize to the padded input size, a crop to the image
size and a bilinear resize to the output size. Done literally, that materialises every query's
padded-size and output-size logits, hundreds of MB per image, although the semantic output
only needs their class-weighted sum and the panoptic and instance outputs only need a few
queries.

Both bilinear resizes are separable, so the whole chain is one linear map per axis: an
(H_out, h) matrix for the rows and a (W_out, w) one for the columns, with a few non-zeros per
row. :func:`query_mask_outputs` applies the column map once per input row, and the
row map a block of output rows at a time (each a GEMM over the band of input rows the block
reads), so a block's logits of every query stay in the cache while its sigmoid, its semantic
scores and its rows of the few full-resolution masks the other outputs need are taken from
them (:func:`logit_row_blocks` yields the blocks). The values equal the literal chain's up to
float rounding (the weights are computed by the same ``interpolate`` calls, applied to unit
vectors). The column map is applied to a window of input rows that slides down with the blocks,
so that at a large output size (3000x4000) no map of every query at the output width exists
beyond a few rows.
"""
from typing import Iterator, List, NamedTuple, Optional, Tuple

import torch
from torch.nn import functional as F

# Output rows per block are chosen so that a block's logits of every query take about this
# many bytes: on a CPU, small enough to stay in the cache and large enough to keep the GEMMs
# efficient; on a GPU, few blocks (few kernel launches) while bounding the memory of a block
# and its transposed copy, where the literal computation holds every row at once.
_BLOCK_BYTES = {"cpu": 4 << 20, "cuda": 256 << 20}


def _resize_1d(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, L) -> (N, size): bilinear resize of N 1D signals, as ``interpolate`` resizes an axis."""
    if x.shape[1] == size:
        return x  # a bilinear resize to the same size is the identity
    return F.interpolate(x[:, None, None, :], size=(1, size), mode="bilinear", align_corners=False)[:, 0, 0]


def resize_matrix(
    size: int, padded: Optional[int], crop: int, out: int, device=None, dtype=torch.float32
) -> torch.Tensor:
    """
    The (out, size) matrix of the 1D chain: resize ``size`` -> ``padded`` (skipped when None),
    keep the first ``crop`` samples, resize ``crop`` -> ``out``. Column j is the chain applied
    to the j-th unit vector.
    """
    x = torch.eye(size, device=device, dtype=dtype)
    if padded is not None:
        x = _resize_1d(x, padded)
    x = _resize_1d(x[:, :crop], out)
    return x.t().contiguous()


def _bands(matrix: torch.Tensor, block: int) -> List[Tuple[int, int, int, int]]:
    """
    For an (O, I) resize matrix, the blocks of ``block`` outputs: (o0, o1, i0, i1) where inputs
    [i0, i1) hold every non-zero weight of outputs [o0, o1). Bilinear weights are local, so a
    block reads a narrow band of the input.
    """
    nonzero = matrix != 0
    any_nonzero = nonzero.any(1)
    first = torch.where(any_nonzero, nonzero.float().argmax(1), 0).tolist()
    last = torch.where(any_nonzero, matrix.shape[1] - 1 - nonzero.flip(1).float().argmax(1), 0).tolist()
    bands = []
    for o0 in range(0, matrix.shape[0], block):
        o1 = min(matrix.shape[0], o0 + block)
        bands.append((o0, o1, min(first[o0:o1]), max(last[o0:o1]) + 1))
    return bands


def _resize_columns(x: torch.Tensor, col_matrix: torch.Tensor, block: int = 64) -> torch.Tensor:
    """(N, w) -> (N, W) = x @ col_matrix.T, one GEMM per block of output columns over the
    band of input columns it reads."""
    out = x.new_empty((x.shape[0], col_matrix.shape[0]))
    for o0, o1, i0, i1 in _bands(col_matrix, block):
        torch.mm(x[:, i0:i1], col_matrix[o0:o1, i0:i1].t(), out=out[:, o0:o1])
    return out


def logit_row_blocks(
    mask_pred: torch.Tensor,
    padded_size: Optional[Tuple[int, int]],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
    rows_per_block: Optional[int] = None,
) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """
    Every query's logits of the resize chain, a block of output rows at a time.

    Args:
        mask_pred: (Q, h, w) mask logits of one image.
        padded_size: the size the logits are first resized to (the padded batch size), or None
            to skip that resize; image_size: the crop kept from it; output_size: the final size.
        rows_per_block: output rows per block; by default about 4 MB of logits per block on a
            CPU and 256 MB on a GPU.
    Yields:
        (y0, y1, logits) for consecutive blocks covering the output rows: logits (y1 - y0, Q, W),
        a new tensor the caller may modify. Nothing when Q, H or W is 0.
    """
    num_queries, h, w = mask_pred.shape
    out_h, out_w = output_size
    if num_queries == 0 or out_h == 0 or out_w == 0:
        return
    pad_h, pad_w = (None, None) if padded_size is None else padded_size
    device, dtype = mask_pred.device, mask_pred.dtype
    row_matrix = resize_matrix(h, pad_h, image_size[0], out_h, device, dtype)  # (H, h)
    col_matrix = resize_matrix(w, pad_w, image_size[1], out_w, device, dtype)  # (W, w)
    row_bytes = mask_pred.element_size() * num_queries * out_w
    budget = _BLOCK_BYTES.get(device.type, _BLOCK_BYTES["cpu"])
    if rows_per_block is None:
        rows_per_block = budget // row_bytes
    rows_per_block = max(1, min(rows_per_block, out_h))
    # input rows whose columns are resized at once, ahead of the blocks that read them
    rows_ahead = max(1, budget // row_bytes)

    def resized_columns(i0: int, i1: int) -> torch.Tensor:
        rows = mask_pred[:, i0:i1].transpose(0, 1).reshape((i1 - i0) * num_queries, w)
        return _resize_columns(rows, col_matrix).view(i1 - i0, num_queries * out_w)

    # (rows, Q * W): input rows [start, start + len(window)) with their columns resized; it
    # slides down with the blocks (their bands of input rows only move down), so that each
    # input row is resized once and the whole (h, Q * W) map never exists
    window, start = mask_pred.new_empty((0, num_queries * out_w)), 0
    for y0, y1, j0, j1 in _bands(row_matrix, rows_per_block):
        end = start + window.shape[0]
        if j1 > end:
            kept = window[max(0, j0 - start):]
            first_new = max(end, j0)
            fresh = resized_columns(first_new, min(h, max(j1, first_new + rows_ahead)))
            window = torch.cat([kept, fresh]) if len(kept) else fresh
            start = first_new - len(kept)
        band = window[j0 - start : j1 - start]
        yield y0, y1, torch.mm(row_matrix[y0:y1, j0:j1], band).view(y1 - y0, num_queries, out_w)


class QueryMaskOutputs(NamedTuple):
    """What :func:`query_mask_outputs` computes; None where not asked for."""

    sem_seg: Optional[torch.Tensor]  # (K, H, W) sum over queries of class prob * mask prob
    probs: Optional[torch.Tensor]  # (R, H, W) mask probabilities of the requested queries
    positive: Optional[torch.Tensor]  # (U, H, W) bool, mask logits > 0 of the requested queries


def query_mask_outputs(
    mask_pred: torch.Tensor,
    padded_size: Optional[Tuple[int, int]],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
    *,
    class_probs: Optional[torch.Tensor] = None,
    prob_queries: Optional[torch.Tensor] = None,
    positive_queries: Optional[torch.Tensor] = None,
    rows_per_block: Optional[int] = None,
) -> QueryMaskOutputs:
    """
    Full-resolution maps of :func:`logit_row_blocks`, taken from each block while it is in the
    cache.

    Args:
        mask_pred, padded_size, image_size, output_size, rows_per_block: as
            :func:`logit_row_blocks`.
        class_probs: (Q, K) class probabilities without "no object"; when given, the semantic
            scores are computed.
        prob_queries: (R,) query indices whose full-resolution mask probabilities are returned.
        positive_queries: (U,) query indices whose full-resolution binary masks (logits > 0)
            are returned.
    Returns:
        :class:`QueryMaskOutputs` at ``output_size``.
    """
    out_h, out_w = output_size
    device = mask_pred.device
    sem_seg = probs = positive = None
    if class_probs is not None:
        sem_seg = semantic_scores_buffer(class_probs, output_size, mask_pred.dtype)
        mixing = class_probs.t().to(mask_pred.dtype).contiguous()
    if prob_queries is not None:
        probs = mask_pred.new_empty((len(prob_queries), out_h, out_w))
    if positive_queries is not None:
        positive = torch.empty((len(positive_queries), out_h, out_w), dtype=torch.bool, device=device)
    if sem_seg is None and probs is None and positive is None:
        return QueryMaskOutputs(None, None, None)
    for y0, y1, block in logit_row_blocks(mask_pred, padded_size, image_size, output_size, rows_per_block):
        if positive is not None:
            torch.gt(block[:, positive_queries].transpose(0, 1), 0, out=positive[:, y0:y1])
        block = block.sigmoid_()  # (n, Q, W)
        if probs is not None:
            probs[:, y0:y1] = block[:, prob_queries].transpose(0, 1)
        if sem_seg is not None:
            add_semantic_rows(sem_seg, mixing, y0, y1, block)
    return QueryMaskOutputs(sem_seg, probs, positive)


def semantic_scores_buffer(class_probs: torch.Tensor, output_size: Tuple[int, int], dtype) -> torch.Tensor:
    """The (K, H, W) semantic scores to fill with :func:`add_semantic_rows`: zeros where no
    query contributes (no queries, or an empty output)."""
    shape = (class_probs.shape[1], *output_size)
    if class_probs.shape[0] == 0:
        return torch.zeros(shape, dtype=dtype, device=class_probs.device)
    return torch.empty(shape, dtype=dtype, device=class_probs.device)


def semantic_rows(mixing: torch.Tensor, probs: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """
    The (K, n * W) semantic scores of n output rows: ``mixing`` (K, Q), the class probabilities
    transposed, times the rows' mask probabilities ``probs`` (n, Q, W); one GEMM, into ``out``
    when given.
    """
    return torch.mm(mixing, probs.transpose(0, 1).reshape(mixing.shape[1], -1), out=out)


def add_semantic_rows(sem_seg: torch.Tensor, mixing: torch.Tensor, y0: int, y1: int, probs: torch.Tensor) -> None:
    """Rows [y0, y1) of the (K, H, W) semantic scores: :func:`semantic_rows` of the rows' mask
    probabilities ``probs`` (y1 - y0, Q, W), written into the output's rows."""
    out_w = sem_seg.shape[2]
    semantic_rows(mixing, probs, out=sem_seg.view(sem_seg.shape[0], -1)[:, y0 * out_w : y1 * out_w])
