"""The multi-scale deformable attention op: compiled kernels, PyTorch reference, and dispatch.

Notation used in shapes below:
    N: batch, S: number of flattened value positions over all levels (sum of H_l * W_l),
    M: attention heads, D: channels per head, Lq: queries, L: levels, P: sampling points.
Sampling locations are normalised (x, y) in [0, 1] per level; bilinear sampling uses
``align_corners=False`` pixel centres and zero padding outside the feature map.
"""
import functools
import importlib
import logging
from types import ModuleType
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

_EXTENSION_NAME = "mask2former._C"
_CPU_KERNEL_DTYPES = (torch.float32, torch.float64)
_CUDA_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# (L, 2) integer (H, W) per level: a tensor on any device, or the same numbers on the host.
SpatialShapes = Union[torch.Tensor, Sequence[Sequence[int]]]
LevelStarts = Union[torch.Tensor, Sequence[int]]


@functools.lru_cache(maxsize=None)
def _load_extension() -> Optional[ModuleType]:
    """Imports the compiled extension once; returns None (with one warning) if it is not built."""
    try:
        return importlib.import_module(_EXTENSION_NAME)
    except ImportError as e:
        logger.warning(
            "%s is not available (%s); MSDeformAttn uses the slower PyTorch implementation. "
            "Build it with `pip install --no-build-isolation -e .` in the repository root.",
            _EXTENSION_NAME,
            e,
        )
        return None


def extension_available() -> bool:
    """Whether the compiled extension ``mask2former._C`` can be imported."""
    return _load_extension() is not None


def kernel_supports(value: torch.Tensor) -> bool:
    """Whether a compiled kernel handles ``value``'s device and dtype (else PyTorch is used)."""
    ext = _load_extension()
    if ext is None:
        return False
    if value.device.type == "cpu":
        return value.dtype in _CPU_KERNEL_DTYPES
    if value.device.type == "cuda":
        return value.dtype in _CUDA_KERNEL_DTYPES and bool(ext.with_cuda())
    return False


def location_dtype(value_dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels take sampling locations and attention weights in, for a value of
    ``value_dtype`` (the C++ ``location_dtype``): float64 for float64, else float32, so that
    float16/bfloat16 values keep full-precision locations (bf16 cannot address the pixels of a
    128-wide map; autocast already makes float32 locations and weights)."""
    return torch.float64 if value_dtype == torch.float64 else torch.float32


def host_levels(
    spatial_shapes: SpatialShapes, level_start_index: Optional[LevelStarts]
) -> Tuple[List[Tuple[int, int]], Optional[List[int]]]:
    """Host copies of the level shapes [(H, W)] and starts, read in one transfer when they are
    on a GPU (one host sync; none for host tensors or Python sequences)."""
    for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
    shapes_t = torch.as_tensor(spatial_shapes, dtype=torch.int64)
    if shapes_t.dim() != 2 or shapes_t.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2), got shape {tuple(shapes_t.shape)}")
    if level_start_index is None:
        return [(int(h), int(w)) for h, w in shapes_t.tolist()], None
    starts_t = torch.as_tensor(level_start_index, dtype=torch.int64, device=shapes_t.device)
    if starts_t.dim() != 1:
        raise ValueError(f"level_start_index must be (L,), got shape {tuple(starts_t.shape)}")
    flat = torch.cat([shapes_t.reshape(-1), starts_t]).tolist()
    n_l = shapes_t.shape[0]
    return [(flat[2 * i], flat[2 * i + 1]) for i in range(n_l)], flat[2 * n_l:]


def _host_tensors(shapes: List[Tuple[int, int]], starts: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The host lists as CPU int64 tensors (L, 2) and (L,): the compiled checks read them
    without waiting for a GPU."""
    return torch.tensor(shapes, dtype=torch.int64).view(-1, 2), torch.tensor(starts, dtype=torch.int64)


def _check_inputs(
    value: torch.Tensor,
    shapes: List[Tuple[int, int]],
    starts: Optional[List[int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    """Raises ValueError/TypeError naming the offending argument when the inputs do not agree.
    ``shapes`` and ``starts`` are host lists (:func:`host_levels`)."""
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, M, D), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be (N, Lq, M, L, P, 2), got shape "
            f"{tuple(sampling_locations.shape)}"
        )
    if attention_weights.dim() != 5:
        raise ValueError(
            f"attention_weights must be (N, Lq, M, L, P), got shape {tuple(attention_weights.shape)}"
        )
    for name, t in (("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        if not value.is_floating_point() or not t.is_floating_point():
            raise TypeError(
                f"value and {name} must be floating point, got {value.dtype} and {t.dtype}"
            )
        if t.device != value.device:
            raise ValueError(f"{name} is on {t.device} but value is on {value.device}")
    n, s, m, _ = value.shape
    n_l, n_p = attention_weights.shape[3], attention_weights.shape[4]
    lq = sampling_locations.shape[1]
    if tuple(sampling_locations.shape[:5]) != (n, lq, m, n_l, n_p) or tuple(
        attention_weights.shape
    ) != (n, lq, m, n_l, n_p):
        raise ValueError(
            "inconsistent shapes: value (N, S, M, D) = "
            f"{tuple(value.shape)}, sampling_locations (N, Lq, M, L, P, 2) = "
            f"{tuple(sampling_locations.shape)}, attention_weights (N, Lq, M, L, P) = "
            f"{tuple(attention_weights.shape)}"
        )
    if len(shapes) != n_l:
        raise ValueError(f"spatial_shapes has {len(shapes)} levels but sampling_locations has {n_l}")
    if any(h < 0 or w < 0 for h, w in shapes):
        raise ValueError(f"spatial_shapes {shapes} has a negative size")
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != s:
        raise ValueError(
            f"value has S={s} positions but spatial_shapes {shapes} sum to {sum(sizes)}"
        )
    if starts is not None:
        expected = [sum(sizes[:i]) for i in range(n_l)]
        if starts != expected:
            raise ValueError(
                f"level_start_index {starts} does not match spatial_shapes {shapes} (expected {expected})"
            )


def ms_deform_attn_core_pytorch(
    value: torch.Tensor,
    value_spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Reference implementation with ``F.grid_sample``; works for any device/dtype.

    Args:
        value: (N, S, M, D)
        value_spatial_shapes: (L, 2) integer (H, W) per level, a tensor or a host sequence
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y)
        attention_weights: (N, Lq, M, L, P)
    Returns:
        (N, Lq, M * D)
    """
    n, _, m, d = value.shape
    _, lq, _, n_l, n_p, _ = sampling_locations.shape
    shapes, _ = host_levels(value_spatial_shapes, None)
    value_list = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        value_l = value_list[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid_l = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        # (N*M, D, Lq, P)
        sampled.append(
            F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_l * n_p)
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(n, m * d, lq)
    return output.transpose(1, 2).contiguous()


class MSDeformAttnFunction(Function):
    """Autograd wrapper of the compiled kernel (``mask2former._C``); no double backward.

    ``apply(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
    im2col_step)`` with the shapes of :func:`ms_deform_attn_core_pytorch`; returns (N, Lq, M*D).
    ``sampling_locations`` and ``attention_weights`` are in :func:`location_dtype` of value's
    dtype (float64 for float64, else float32), the kernels' one contract on every device.
    ``spatial_shapes`` and ``level_start_index`` are tensors on any device or host sequences;
    host ones cost no GPU synchronisation (device ones one, to check them). ``im2col_step`` (a
    positive int) is kept for API compatibility: the kernels need no im2col buffer and process
    the whole batch at once.
    """

    @staticmethod
    def forward(
        ctx,
        value: torch.Tensor,
        spatial_shapes: SpatialShapes,
        level_start_index: LevelStarts,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        im2col_step: int = 128,
    ) -> torch.Tensor:
        ext = _load_extension()
        if ext is None:
            raise RuntimeError(
                f"MSDeformAttnFunction needs the compiled extension {_EXTENSION_NAME}; build it or "
                "use ms_deform_attn(), which falls back to PyTorch"
            )
        if not isinstance(im2col_step, int) or im2col_step <= 0:
            raise ValueError(f"im2col_step must be a positive int, got {im2col_step!r}")
        shapes, starts = host_levels(spatial_shapes, level_start_index)
        _check_inputs(value, shapes, starts, sampling_locations, attention_weights)
        expected = location_dtype(value.dtype)
        if sampling_locations.dtype != expected or attention_weights.dtype != expected:
            raise TypeError(
                f"sampling_locations and attention_weights must have dtype {expected} for a {value.dtype} "
                f"value, got {sampling_locations.dtype} and {attention_weights.dtype}"
            )
        if not kernel_supports(value):
            raise TypeError(
                f"no compiled MSDeformAttn kernel for {value.dtype} on {value.device}; "
                "use ms_deform_attn(), which falls back to PyTorch"
            )
        spatial_shapes, level_start_index = _host_tensors(shapes, starts)
        value = value.contiguous()
        sampling_locations = sampling_locations.contiguous()
        attention_weights = attention_weights.contiguous()
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        n, _, m, d = value.shape
        lq = sampling_locations.shape[1]
        if value.numel() == 0 or sampling_locations.numel() == 0:
            return value.new_zeros((n, lq, m * d))
        return ext.ms_deform_attn_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        if value.numel() == 0 or sampling_locations.numel() == 0:
            grads = (torch.zeros_like(value), torch.zeros_like(sampling_locations), torch.zeros_like(attention_weights))
        else:
            grads = _load_extension().ms_deform_attn_backward(
                value,
                spatial_shapes,
                level_start_index,
                sampling_locations,
                attention_weights,
                grad_output.contiguous(),
            )
        grad_value, grad_loc, grad_attn = grads
        return grad_value, None, None, grad_loc, grad_attn, None


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: SpatialShapes,
    level_start_index: LevelStarts,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention with explicit kernel selection.

    Uses the compiled kernel when :func:`kernel_supports` ``value`` (CPU float32/float64; CUDA
    float32/float16/bfloat16 when built with CUDA), with locations and weights cast to
    :func:`location_dtype`; otherwise :func:`ms_deform_attn_core_pytorch`. Shapes as in
    :func:`ms_deform_attn_core_pytorch`; returns (N, Lq, M*D) in ``value``'s dtype. Pass
    ``spatial_shapes``/``level_start_index`` on the host (a CPU tensor or a list) to spare the
    GPU synchronisation that reading device tensors costs.
    """
    shapes, starts = host_levels(spatial_shapes, level_start_index)
    if kernel_supports(value):
        loc_dtype = location_dtype(value.dtype)
        # tensors, not lists: traces (fvcore's FLOP count) see the function's 5 tensor inputs
        return MSDeformAttnFunction.apply(
            value, *_host_tensors(shapes, starts), sampling_locations.to(loc_dtype), attention_weights.to(loc_dtype)
        )
    _check_inputs(value, shapes, starts, sampling_locations, attention_weights)
    dtype = torch.promote_types(
        value.dtype, torch.promote_types(sampling_locations.dtype, attention_weights.dtype)
    )
    output = ms_deform_attn_core_pytorch(
        value.to(dtype), shapes, sampling_locations.to(dtype), attention_weights.to(dtype)
    )
    return output.to(value.dtype)
