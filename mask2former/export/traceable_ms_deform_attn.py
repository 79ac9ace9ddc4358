"""Multi-scale deformable attention from standard operators only, with the feature sizes read
from tensors, so that a traced graph (TorchScript, ONNX ``Gather`` / ``MatMul``, opset 17) serves
any input size. The compiled kernel is opaque to the tracer, and the PyTorch reference of
``ops.functions`` turns the level sizes into Python ints, which a trace would freeze.

Why not ``grid_sample`` (exported as ``GridSample``): onnxruntime's took 46-48 % of the
exported R50 model's operator time at 800x1333 (2 threads), about 2.7 s per encoder layer.
Here the value of each level is zero-padded and laid out as a table of 2x2 pixel blocks, so
that one ``Gather`` row per sampling point reads its four bilinear corners, and the attention
weights are folded into the corner weights, so that one (1, L*P*4) x (L*P*4, D) ``MatMul`` per
(query, head) replaces the sampling and the weighted sum.

Layout, chosen by measurement with onnxruntime (one layer's shapes at 800x1333, 2 threads,
alternating runs on a shared machine; tools/deploy/profile_onnx.py gives the per-node times):
- the table is pixel-major with the heads interleaved (row (pixel, head)), as the value comes
  (no transpose), and the gathered samples come out query-major, as the output goes: a query's
  heads sample near one another, and this beat head-major rows (one head's table after the
  other) in every alternating run;
- every elementwise step runs on whole (N, Lq, M*L*P[*2]) tensors, the per-level sizes as one
  vector along the last axis: onnxruntime broadcasts a (L, 1, 2) size table against
  (..., L, P, 2) in spans of 2 elements, which made these steps cost 0.3 s of the 1.1 s of a
  layer; the corner index is computed in float (exact: integers below 2**24) and cast once;
- the table is one ``Gather`` of D-vectors rather than pad + four shifted slices + concat per
  level (0.06 s instead of 0.2 s under load).
What is left is the ``Gather`` of the samples and the ``MatMul``: the (N, Lq, M, L*P*4, D)
samples are about 1 GB at 800x1333. The ONNX export runs them a cache-sized chunk at a time
(``chunked_gather``). Measured and not taken: ``Mul`` + ``ReduceSum`` instead of the ``MatMul``
(2.8x slower), the query axis in 4, 8 or 16 static chunks (no faster: the chunks must fit in
L2, see ``chunked_gather``), int32 indices (same time), ``RoiAlign`` for the bilinear samples
(2.5x slower than ``Gather`` + ``MatMul``).
"""
import torch
from torch import Tensor

from .chunked_gather import gather_weighted_sum


def _quad_table(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor) -> Tensor:
    """
    Args: as :func:`ms_deform_attn_traceable`.
    Returns:
        (N*R*M, 4 * D), R the sum of (H + 2) * (W + 2): each level zero-padded to the pixels
        -1 .. H + 1 and -1 .. W + 1; the row ((n * R + level start + (y + 1) * (W + 2) + x + 1)
        * M + head), for x in -1 .. W and y in -1 .. H, holds that head's pixels (y, x),
        (y, x + 1), (y + 1, x), (y + 1, x + 1). Built by one ``Gather`` of the value's
        D-vectors (a zero one appended for the padding), which costs a fifth of padding,
        slicing and concatenating the four shifted copies of every level.
    """
    n, s, m, d = value.shape
    corner = torch.arange(2, device=value.device)
    pixels = []
    for level in range(spatial_shapes.shape[0]):
        height, width = spatial_shapes[level, 0], spatial_shapes[level, 1]
        ys = (torch.arange(height + 2, device=value.device) - 1)[:, None] + corner
        xs = (torch.arange(width + 2, device=value.device) - 1)[:, None] + corner
        ys, xs = ys[:, None, :, None], xs[None, :, None, :]  # (H + 2, 1, 2, 1), (1, W + 2, 1, 2)
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        # (H + 2, W + 2, 2, 2): the pixel of each block's corner in S, or S (the zero vector)
        pixels.append(torch.where(inside, level_start_index[level] + ys * width + xs, s).reshape(-1, 4))
    pixel = torch.cat(pixels, 0)  # (R, 4)
    heads = torch.arange(m, device=value.device)[:, None]
    batch_start = torch.arange(n, device=value.device) * ((s + 1) * m)
    rows = (pixel[:, None, :] * m + heads) + batch_start[:, None, None, None]  # (N, R, M, 4)
    vectors = torch.cat((value, value.new_zeros(n, 1, m, d)), 1).reshape(-1, d)  # (N*(S + 1)*M, D)
    return vectors[rows].reshape(-1, 4 * d)


def _per_column(level_values: Tensor, heads: int, points: int) -> Tensor:
    """(L, *E) per-level values -> (M*L*P*E,): one per (head, level, point[, x / y]) column of
    the sampling locations, in their order."""
    num_levels = level_values.shape[0]
    shape = (heads, num_levels, points) + tuple(level_values.shape[1:])
    return level_values[None, :, None].expand(shape).reshape(-1)


def ms_deform_attn_traceable(
    value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
    sampling_locations: Tensor, attention_weights: Tensor, query_multiple: int = 0,
) -> Tensor:
    """
    Bilinear sampling of every level (``align_corners=False``, zero padding: the kernels'
    convention), weighted and summed over levels and points.

    Args:
        value: (N, S, M, D), S = sum of H_l * W_l.
        spatial_shapes: (L, 2) integer (H_l, W_l).
        level_start_index: (L,) start of each level in S.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y) in [0, 1].
        attention_weights: (N, Lq, M, L, P).
        query_multiple: Lq is a multiple of this for every input of the traced graph (0: not
            known); lets the ONNX export's chunked sampling do without padding.
    Returns:
        (N, Lq, M * D)
    """
    n, lq, m, _, num_points, _ = sampling_locations.shape
    # pixel coordinates, pixel centres at integers: (N, Lq, M*L*P) each
    sizes = _per_column(spatial_shapes.flip(1).to(value.dtype), m, num_points)  # (W, H) per column
    x, y = (sampling_locations.reshape(n, lq, -1) * sizes - 0.5).view(n, lq, -1, 2).unbind(-1)
    return sample_at_pixels(value, spatial_shapes, level_start_index, x, y,
                            attention_weights.reshape(n, lq, -1), num_points, query_multiple)


def sample_at_pixels(
    value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, x: Tensor, y: Tensor,
    attention: Tensor, num_points: int, query_multiple: int = 0,
) -> Tensor:
    """
    :func:`ms_deform_attn_traceable` from the sampling points' pixel coordinates.

    Args:
        value, spatial_shapes, level_start_index, query_multiple: as
            :func:`ms_deform_attn_traceable`.
        x, y: (N, Lq, M*L*P) pixel coordinates of the points (pixel centres at integers: a
            normalised location times the level's size, minus 0.5), in (head, level, point) order.
        attention: (N, Lq, M*L*P) the points' attention weights, in the same order.
        num_points: P.
    Returns:
        (N, Lq, M * D)
    """
    n, _, m, d = value.shape
    lq = x.shape[1]
    dtype = value.dtype
    quads = _quad_table(value, spatial_shapes, level_start_index)
    heights, widths = spatial_shapes[:, 0], spatial_shapes[:, 1]
    padded_sizes = (heights + 2) * (widths + 2)
    quad_starts = padded_sizes.cumsum(0) - padded_sizes
    columns = x.shape[-1]  # M*L*P

    # clamped to the padding's first pixel outside the map, which gives the same (zero) sample
    # as any point farther out
    x = torch.min(x.clamp(min=-1.0), _per_column(widths.to(dtype), m, num_points))
    y = torch.min(y.clamp(min=-1.0), _per_column(heights.to(dtype), m, num_points))
    cx, cy = x.floor(), y.floor()
    fx, fy = x - cx, y - cy

    # the point's row in the table: ((n * R + quad start + (cy + 1) * (W + 2) + cx + 1) * M + head
    heads = torch.arange(m, dtype=dtype, device=value.device)[:, None].expand(m, columns // m).reshape(-1)
    row_stride = _per_column(((widths + 2) * m).to(dtype), m, num_points)
    first_row = _per_column(((quad_starts + widths + 3) * m).to(dtype), m, num_points) + heads
    batch_start = torch.arange(n, dtype=dtype, device=value.device) * (padded_sizes.sum() * m).to(dtype)
    index = (cy * row_stride + cx * m + (first_row + batch_start[:, None, None])).long()

    # bilinear weights (1 - distance along each axis) times the attention weights, in the
    # table's corner order: (N, Lq, M*L*P, 4)
    lower = attention * fy
    upper = attention - lower
    upper_right, lower_right = upper * fx, lower * fx
    weights = torch.stack((upper - upper_right, upper_right, lower - lower_right, lower_right), -1)
    # (N*Lq*M, 1, L*P*4) @ the (N*Lq*M, L*P*4, D) samples: in chunks when exported to ONNX
    output = gather_weighted_sum(quads, index.view(n * lq * m, -1), weights.view(n * lq * m, 1, -1), d,
                                 rows_multiple=m * query_multiple)
    return output.view(n, lq, m * d)
