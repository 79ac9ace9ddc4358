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
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

_EXTENSION_NAME = "mask2former._C"
_CPU_KERNEL_DTYPES = (torch.float32, torch.float64)
_CUDA_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


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


def _shape_list(spatial_shapes: torch.Tensor) -> List[Tuple[int, int]]:
    return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]


def _check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: Optional[torch.Tensor],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    """Raises ValueError/TypeError naming the offending argument when the inputs do not agree."""
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
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be (L, 2), got shape {tuple(spatial_shapes.shape)}")
    for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if t is not None and (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
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
    if spatial_shapes.shape[0] != n_l:
        raise ValueError(
            f"spatial_shapes has {spatial_shapes.shape[0]} levels but sampling_locations has {n_l}"
        )
    shapes = _shape_list(spatial_shapes)
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != s:
        raise ValueError(
            f"value has S={s} positions but spatial_shapes {shapes} sum to {sum(sizes)}"
        )
    if level_start_index is not None:
        starts = [sum(sizes[:i]) for i in range(n_l)]
        if level_start_index.shape != (n_l,) or level_start_index.tolist() != starts:
            raise ValueError(
                f"level_start_index {level_start_index.tolist()} does not match spatial_shapes "
                f"{shapes} (expected {starts})"
            )


def ms_deform_attn_core_pytorch(
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Reference implementation with ``F.grid_sample``; works for any device/dtype.

    Args:
        value: (N, S, M, D)
        value_spatial_shapes: (L, 2) integer (H, W) per level
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y)
        attention_weights: (N, Lq, M, L, P)
    Returns:
        (N, Lq, M * D)
    """
    n, _, m, d = value.shape
    _, lq, _, n_l, n_p, _ = sampling_locations.shape
    shapes = _shape_list(value_spatial_shapes)
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
    ``sampling_locations`` and ``attention_weights`` share a dtype, which is ``value``'s, or
    float32 when ``value`` is float16/bfloat16 on CUDA. ``im2col_step`` (a positive int) is kept
    for API compatibility: the kernels need no im2col buffer and process the whole batch at once.
    """

    @staticmethod
    def forward(
        ctx,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
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
        _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        if sampling_locations.dtype != attention_weights.dtype:
            raise TypeError(
                "sampling_locations and attention_weights must share a dtype, got "
                f"{sampling_locations.dtype} and {attention_weights.dtype}"
            )
        loc_dtype = sampling_locations.dtype
        reduced_ok = value.is_cuda and value.dtype in _REDUCED_PRECISION and loc_dtype == torch.float32
        if loc_dtype != value.dtype and not reduced_ok:
            raise TypeError(
                f"sampling_locations/attention_weights dtype {loc_dtype} does not match value "
                f"dtype {value.dtype} (float32 is also accepted for float16/bfloat16 CUDA values)"
            )
        if not kernel_supports(value):
            raise TypeError(
                f"no compiled MSDeformAttn kernel for {value.dtype} on {value.device}; "
                "use ms_deform_attn(), which falls back to PyTorch"
            )
        spatial_shapes = spatial_shapes.to(device=value.device, dtype=torch.int64).contiguous()
        level_start_index = level_start_index.to(device=value.device, dtype=torch.int64).contiguous()
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
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention with explicit kernel selection.

    Uses the compiled kernel when :func:`kernel_supports` ``value`` (CPU float32/float64; CUDA
    float32/float16/bfloat16 when built with CUDA), otherwise :func:`ms_deform_attn_core_pytorch`.
    Shapes as in :func:`ms_deform_attn_core_pytorch`; returns (N, Lq, M*D) in ``value``'s dtype.
    """
    if kernel_supports(value):
        # Reduced-precision CUDA values keep float32 locations: bf16 cannot address pixels of
        # a 128-wide map accurately, and autocast already produces float32 locations/weights.
        loc_dtype = torch.float32 if value.is_cuda and value.dtype in _REDUCED_PRECISION else value.dtype
        return MSDeformAttnFunction.apply(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations.to(loc_dtype),
            attention_weights.to(loc_dtype),
        )
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    dtype = torch.promote_types(
        value.dtype, torch.promote_types(sampling_locations.dtype, attention_weights.dtype)
    )
    output = ms_deform_attn_core_pytorch(
        value.to(dtype), spatial_shapes, sampling_locations.to(dtype), attention_weights.to(dtype)
    )
    return output.to(value.dtype)
