"""Multi-scale deformable attention from standard operators only, with the feature sizes read
from tensors, so that a traced graph (TorchScript, ONNX ``GridSample``, opset >= 16) serves any
input size. The compiled kernel is opaque to the tracer, and the PyTorch reference of
``ops.functions`` turns the level sizes into Python ints, which a trace would freeze."""
import torch
import torch.nn.functional as F
from torch import Tensor


def ms_deform_attn_traceable(
    value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
    sampling_locations: Tensor, attention_weights: Tensor,
) -> Tensor:
    """
    Bilinear sampling of every level with ``F.grid_sample`` (``align_corners=False``, zero
    padding: the kernels' convention), weighted and summed over levels and points.

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
    _, lq, _, n_l, n_p, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    per_level = []
    for level in range(n_l):
        height, width = spatial_shapes[level, 0], spatial_shapes[level, 1]
        start = level_start_index[level]
        # (N, H*W, M, D) -> (N*M, D, H, W)
        level_value = value[:, start : start + height * width].permute(0, 2, 3, 1)
        level_value = level_value.reshape(n * m, d, height, width)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        level_grid = grids[:, :, :, level].transpose(1, 2).reshape(n * m, lq, n_p, 2)
        per_level.append(
            F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # (N*M, D, Lq, L*P) samples, weighted by (N*M, 1, Lq, L*P)
    samples = torch.stack(per_level, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_l * n_p)
    output = (samples * weights).sum(-1).view(n, m * d, lq)
    return output.transpose(1, 2).contiguous()
