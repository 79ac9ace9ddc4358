"""Multi-scale deformable attention from standard operators only, with the feature sizes read
from tensors, so that a traced graph (TorchScript, ONNX ``Gather`` / ``MatMul``, opset 17) serves
any input size. The compiled kernel is opaque to the tracer, and the PyTorch reference of
``ops.functions`` turns the level sizes into Python ints, which a trace would freeze.

Why not ``grid_sample`` (exported as ``GridSample``): onnxruntime's took 46-48 % of the
exported R50 model's operator time at 800x1333 (2 threads), about 2.7 s per encoder layer.
Here the value of each level is zero-padded and laid out as a table of 2x2 pixel blocks
((H + 2) * (W + 2) rows of 4 * D channels), so that one ``Gather`` row per sampling point
reads its four bilinear corners, and the attention weights are folded into the corner
weights, so that one (1, L*P*4) x (L*P*4, D) ``MatMul`` per (query, head) replaces the
sampling and the weighted sum. Measured with onnxruntime on one layer's shapes at 800x1333
(Lq = S = 22 050, M = 8, D = 32, L = 3, P = 4): GridSample 2.7 s, a gather of the four corners
1.1-1.2 s, of two horizontal pairs 0.9 s, of one 2x2 block (this) 0.76 s; the whole exported
network 22.5 s -> 10.5 s (same load).
"""
import torch
import torch.nn.functional as F
from torch import Tensor


def _quad_table(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor) -> Tensor:
    """
    Args: as :func:`ms_deform_attn_traceable`.
    Returns:
        (N*M, R, 4 * D): for each level, zero-padded to the pixels -1 .. H + 1 and -1 .. W + 1,
        the row (l, y, x) = level start + (y + 1) * (W + 2) + (x + 1), for x in -1 .. W and
        y in -1 .. H, holds the pixels (y, x), (y, x + 1), (y + 1, x), (y + 1, x + 1); R is the
        sum of (H + 2) * (W + 2).
    """
    n, _, m, d = value.shape
    quads = []
    for level in range(spatial_shapes.shape[0]):
        height, width = spatial_shapes[level, 0], spatial_shapes[level, 1]
        start = level_start_index[level]
        # (N, H*W, M, D) -> (N*M, H + 3, W + 3, D)
        level_value = value[:, start : start + height * width].transpose(1, 2).reshape(n * m, height, width, d)
        padded = F.pad(level_value, (0, 0, 1, 2, 1, 2))
        quad = torch.cat((padded[:, :-1, :-1], padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]), -1)
        quads.append(quad.flatten(1, 2))
    return torch.cat(quads, 1)


def ms_deform_attn_traceable(
    value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
    sampling_locations: Tensor, attention_weights: Tensor,
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
    Returns:
        (N, Lq, M * D)
    """
    n, _, m, d = value.shape
    lq = sampling_locations.shape[1]
    quads = _quad_table(value, spatial_shapes, level_start_index)
    padded_widths = spatial_shapes[:, 1, None] + 2  # (L, 1)
    padded_sizes = (spatial_shapes[:, 0] + 2) * padded_widths[:, 0]
    quad_starts = (padded_sizes.cumsum(0) - padded_sizes)[:, None]  # (L, 1)
    # head-major, so that one head's gathers stay within its rows: (N, M, Lq, L, P, 2)
    locations = sampling_locations.transpose(1, 2)
    sizes = spatial_shapes.flip(1).to(value.dtype)[:, None]  # (L, 1, 2) (W, H)
    # pixel coordinates, pixel centres at integers; clamped to the padding's first pixel
    # outside the map, which gives the same (zero) sample as any point farther out
    xy = torch.min(torch.max(locations * sizes - 0.5, sizes.new_full((), -1.0)), sizes)
    corner = xy.floor()
    frac = xy - corner
    # (N, M, Lq, L, P): the point's row in the (N*M*R, 4 * D) table
    corner = corner.long() + 1
    index = quad_starts + corner[..., 1] * padded_widths + corner[..., 0]
    index = index + torch.arange(n * m, device=value.device).view(n, m, 1, 1, 1) * quads.shape[1]
    samples = quads.flatten(0, 1)[index.reshape(n, m, lq, -1)].reshape(n, m, lq, -1, d)  # (N, M, Lq, L*P*4, D)
    # bilinear weights (1 - distance along each axis), in the quads' order, times the attention
    # weights (folded into the smaller factor): (N, M, Lq, L, P, 2, 2)
    ends = value.new_tensor([1.0, 0.0])
    along_x = (frac[..., 0, None] - ends).abs()  # (1 - fx, fx)
    along_y = (frac[..., 1, None] - ends).abs() * attention_weights.transpose(1, 2)[..., None]
    weights = along_y[..., :, None] * along_x[..., None, :]
    output = torch.matmul(weights.reshape(n, m, lq, 1, -1), samples)  # (N, M, Lq, 1, D)
    return output.reshape(n, m, lq, d).transpose(1, 2).reshape(n, lq, m * d)
