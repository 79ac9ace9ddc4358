"""The multi-scale deformable attention layer (Deformable DETR, Zhu et al. 2021)."""
import math
import warnings
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.init import constant_, xavier_uniform_

from .....export.traceable_ms_deform_attn import ms_deform_attn_traceable, sample_at_pixels
from ..functions import ms_deform_attn
from ..functions.ms_deform_attn_func import LevelStarts, SpatialShapes, host_levels


def _is_power_of_2(n: int) -> bool:
    return isinstance(n, int) and n > 0 and (n & (n - 1)) == 0


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` learned sampling points around its reference point
    on each of ``n_levels`` feature maps, per head.

    The submodule names (``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj``) are checkpoint keys and must not change.
    """

    # True while a model is exported (mask2former.export): the compiled kernel is opaque to a
    # tracer, so the exported graph gets standard operators with dynamic level sizes instead.
    traceable = False
    # While traced: the query count of every input the traced graph will get is a multiple of
    # this (0: not known); the export sets it from the image padding (see ms_deform_attn_traceable).
    traced_query_multiple = 0

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        head_dim = d_model // n_heads
        if not _is_power_of_2(head_dim):
            # Correct either way; the CUDA kernel is just most efficient for power-of-2 heads.
            warnings.warn(
                f"MSDeformAttn: d_model // n_heads = {head_dim} is not a power of 2, which is "
                "less efficient in the CUDA kernel"
            )
        # the original's attribute; the kernels need no im2col buffer, so nothing reads it
        self.im2col_step = 128
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points

        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        constant_(self.sampling_offsets.weight.data, 0.0)
        # Heads start looking in evenly spread directions, point i at distance i+1.
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid_init = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid_init = (
            (grid_init / grid_init.abs().max(-1, keepdim=True)[0])
            .view(self.n_heads, 1, 1, 2)
            .repeat(1, self.n_levels, self.n_points, 1)
        )
        for i in range(self.n_points):
            grid_init[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid_init.view(-1))
        constant_(self.attention_weights.weight.data, 0.0)
        constant_(self.attention_weights.bias.data, 0.0)
        xavier_uniform_(self.value_proj.weight.data)
        constant_(self.value_proj.bias.data, 0.0)
        xavier_uniform_(self.output_proj.weight.data)
        constant_(self.output_proj.bias.data, 0.0)

    def _level_tables(
        self, spatial_shapes: SpatialShapes, level_start_index: LevelStarts, device: torch.device
    ) -> Tuple[torch.Tensor, tuple, int]:
        """
        The (L, 2) (W, H) normaliser of the sampling offsets, the level tables the op takes and
        the number of levels. The kernels get host-side tables, so that their checks cost no GPU
        synchronisation; while tracing for export (``traceable``) the tables stay tensors, so
        that the traced graph follows the input size instead of freezing it.
        """
        if self.traceable:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).float()
            return normalizer, (spatial_shapes, level_start_index), spatial_shapes.shape[0]
        shapes, starts = host_levels(spatial_shapes, level_start_index)
        normalizer = torch.tensor([(w, h) for h, w in shapes], dtype=torch.float32)
        normalizer = normalizer.to(device, non_blocking=True)
        return normalizer, (shapes, starts), len(shapes)

    def _attention(self, query: torch.Tensor) -> torch.Tensor:
        """(N, Lq, C) -> (N, Lq, M, L, P) attention weights, softmax over each head's L*P points."""
        n, lq, _ = query.shape
        m, n_l, n_p = self.n_heads, self.n_levels, self.n_points
        return self.attention_weights(query).view(n, lq, m, n_l * n_p).softmax(-1).view(n, lq, m, n_l, n_p)

    def _traced_point_sampling(
        self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
        offset_normalizer: torch.Tensor, tables: tuple,
    ) -> torch.Tensor:
        """
        The sampling of :meth:`forward` for exported graphs, with (N, Lq, L, 2) reference
        points: the points' pixel coordinates come straight from the offsets, which are in
        pixels of each level: (reference + offset / size) * size - 0.5 = reference * size - 0.5
        + offset (the same up to float rounding), and the x and y offsets from the even and odd
        rows of ``sampling_offsets`` (its outputs interleave them). In onnxruntime this saves
        five passes over the (N, Lq, M*L*P*2) coordinates per layer (a division, a product, a
        subtraction and the two splits of x and y: 40 ms of the R50 encoder at 800x1344).

        Args:
            offset_normalizer: (L, 2) (W, H) of each level, from :meth:`_level_tables`.
        Returns:
            (N, Lq, M * D)
        """
        n, lq, _ = query.shape
        m, n_l, n_p = self.n_heads, self.n_levels, self.n_points
        spatial_shapes, level_start_index = tables
        weight, bias = self.sampling_offsets.weight, self.sampling_offsets.bias
        # (N, Lq, L, 2) (x, y) reference * (W, H) - 0.5, the same for every head and point
        base = reference_points * offset_normalizer.to(query.dtype) - 0.5
        pixels = []
        for axis in range(2):
            offsets = F.linear(query, weight[axis::2], bias[axis::2]).view(n, lq, m, n_l * n_p)
            level_base = base[..., axis, None].expand(n, lq, n_l, n_p).reshape(n, lq, 1, n_l * n_p)
            pixels.append((offsets + level_base).view(n, lq, -1))
        return sample_at_pixels(value, spatial_shapes, level_start_index, *pixels,
                                self._attention(query).view(n, lq, -1), n_p, self.traced_query_multiple)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: SpatialShapes,
        input_level_start_index: LevelStarts,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C)
            reference_points: (N, Lq, L, 2) normalised (x, y) in [0, 1] (top-left (0, 0),
                bottom-right (1, 1), padding included), or (N, Lq, L, 4) boxes (cx, cy, w, h)
            input_flatten: (N, S, C) all levels flattened, S = sum_l H_l * W_l
            input_spatial_shapes: (L, 2) integer (H_l, W_l), a tensor or a host sequence
            input_level_start_index: (L,) start of each level in S. Host tables (CPU tensors,
                lists) cost no GPU synchronisation; tables on a GPU are read once per call.
            input_padding_mask: (N, S) bool, True at padding positions, or None
        Returns:
            (N, Lq, C)
        Raises:
            ValueError: on inconsistent shapes, e.g. S != sum_l H_l * W_l (checked by the op).
        """
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        m, n_l, n_p = self.n_heads, self.n_levels, self.n_points
        offset_normalizer, tables, num_levels = self._level_tables(
            input_spatial_shapes, input_level_start_index, query.device
        )
        if num_levels != n_l:
            raise ValueError(
                f"input_spatial_shapes must be ({n_l}, 2) for n_levels={n_l}, got {num_levels} levels"
            )
        if reference_points.shape[-1] not in (2, 4):
            raise ValueError(
                "reference_points must end in 2 (points) or 4 (boxes), got shape "
                f"{tuple(reference_points.shape)}"
            )

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, m, self.d_model // m)
        if self.traceable and reference_points.shape[-1] == 2:
            output = self._traced_point_sampling(query, reference_points, value, offset_normalizer, tables)
            return self.output_proj(output)

        sampling_offsets = self.sampling_offsets(query).view(n, lq, m, n_l, n_p, 2)
        attention_weights = self._attention(query)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level; (W, H) turns them into normalised (x, y)
            # Broadcast over whole (L*P*2) rows rather than over the middle dims of a 6-d
            # tensor, which keeps the elementwise loops vectorised (same values, ~6x faster).
            offset_normalizer = offset_normalizer.to(sampling_offsets.dtype)
            normalizer = offset_normalizer[:, None, :].expand(n_l, n_p, 2).reshape(-1)
            refs = reference_points[:, :, None, :, None, :].expand(n, lq, 1, n_l, n_p, 2)
            sampling_locations = (
                refs.reshape(n, lq, 1, -1) + sampling_offsets.reshape(n, lq, m, -1) / normalizer
            ).view(n, lq, m, n_l, n_p, 2)
        else:
            sampling_locations = (
                reference_points[:, :, None, :, None, :2]
                + sampling_offsets / n_p * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        if self.traceable:
            output = ms_deform_attn_traceable(value, *tables, sampling_locations, attention_weights,
                                              query_multiple=self.traced_query_multiple)
        else:
            output = ms_deform_attn(value, *tables, sampling_locations, attention_weights)
        return self.output_proj(output)
