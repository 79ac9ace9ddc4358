"""Tests of the multi-scale deformable attention op (C++/CUDA kernels vs the PyTorch reference)."""
import logging
import math
import os
import subprocess
import sys
from typing import List, Sequence, Tuple

import pytest
import torch

from mask2former.modeling.pixel_decoder.ops.functions import (
    MSDeformAttnFunction,
    extension_available,
    kernel_supports,
    ms_deform_attn,
    ms_deform_attn_core_pytorch,
)
from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn_func
from mask2former.modeling.pixel_decoder.ops.modules import MSDeformAttn
from model_utils import REPO, TESTS

HAS_EXT = extension_available()
needs_ext = pytest.mark.skipif(
    not HAS_EXT,
    reason="extension mask2former._C is not built (`pip install --no-build-isolation -e .`)",
)
HAS_CUDA_KERNEL = HAS_EXT and torch.cuda.is_available() and bool(ms_deform_attn_func._load_extension().with_cuda())
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA_KERNEL,
    reason="needs a CUDA GPU and mask2former._C built with CUDA (no GPU / CPU-only build here)",
)

Inputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def make_inputs(
    shapes: Sequence[Tuple[int, int]],
    n: int = 2,
    m: int = 2,
    d: int = 4,
    p: int = 2,
    lq: int = 5,
    dtype: torch.dtype = torch.float64,
    loc_range: Tuple[float, float] = (-0.1, 1.1),
    seed: int = 0,
) -> Inputs:
    """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)."""
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s, n_l = int(sizes.sum()), len(shapes)
    value = torch.randn(n, s, m, d, generator=g, dtype=dtype)
    lo, hi = loc_range
    loc = torch.rand(n, lq, m, n_l, p, 2, generator=g, dtype=dtype) * (hi - lo) + lo
    attn = torch.rand(n, lq, m, n_l, p, generator=g, dtype=dtype) + 0.05
    attn = attn / attn.sum((-1, -2), keepdim=True)
    return value, spatial_shapes, level_start_index, loc, attn


def grads_of(fn, value, shapes, starts, loc, attn, grad_out=None) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    leaves = [t.detach().clone().requires_grad_(True) for t in (value, loc, attn)]
    out = fn(leaves[0], shapes, starts, leaves[1], leaves[2])
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.device, out.dtype))
    return out.detach(), list(grads)


def reference(value, shapes, starts, loc, attn):
    return ms_deform_attn_core_pytorch(value, shapes, loc, attn)


def kernel(value, shapes, starts, loc, attn):
    return MSDeformAttnFunction.apply(value, shapes, starts, loc, attn, 64)


def assert_matches_reference(inputs: Inputs, atol: float, rtol: float) -> None:
    out_k, grads_k = grads_of(kernel, *inputs)
    out_r, grads_r = grads_of(reference, *inputs)
    torch.testing.assert_close(out_k, out_r, atol=atol, rtol=rtol)
    for name, gk, gr in zip(("value", "sampling_locations", "attention_weights"), grads_k, grads_r):
        torch.testing.assert_close(gk, gr, atol=atol, rtol=rtol, msg=lambda s: f"grad {name}: {s}")


# ---------------------------------------------------------------- CPU kernel vs reference


@needs_ext
def test_gradcheck_float64():
    inputs = make_inputs([(3, 4), (2, 3)], n=1, m=2, d=3, p=2, lq=3)
    value, shapes, starts, loc, attn = inputs
    args = (
        value.requires_grad_(True),
        shapes,
        starts,
        loc.requires_grad_(True),
        attn.requires_grad_(True),
        64,
    )
    assert torch.autograd.gradcheck(MSDeformAttnFunction.apply, args, eps=1e-6, atol=1e-5)


@needs_ext
def test_float32_pixel_decoder_like_shapes():
    # 8 heads x 32 channels, 3 levels, 4 points, Lq = S as in the pixel decoder (smaller maps).
    shapes = [(16, 16), (8, 8), (4, 4)]
    inputs = make_inputs(shapes, n=2, m=8, d=32, p=4, lq=336, dtype=torch.float32, loc_range=(0, 1))
    assert_matches_reference(inputs, atol=1e-4, rtol=1e-5)


@needs_ext
@pytest.mark.parametrize("channels", [5, 30, 71])
def test_channel_counts(channels):
    inputs = make_inputs([(5, 7), (3, 2)], n=2, m=3, d=channels, p=3, lq=7)
    assert_matches_reference(inputs, atol=1e-10, rtol=1e-10)


@needs_ext
@pytest.mark.parametrize("levels", [[(6, 9)], [(12, 10), (6, 5), (3, 3), (2, 1)]])
def test_one_and_four_levels(levels):
    inputs = make_inputs(levels, n=2, m=2, d=8, p=4, lq=9)
    assert_matches_reference(inputs, atol=1e-10, rtol=1e-10)


@needs_ext
def test_points_outside_contribute_nothing():
    value, shapes, starts, _, attn = make_inputs([(4, 5), (2, 3)], lq=6)
    g = torch.Generator().manual_seed(3)
    # every corner of these points lies outside: pixel coords <= -1 or >= size
    far = torch.rand(2, 6, 2, 2, 2, 2, generator=g, dtype=torch.float64) * 0.5
    loc = torch.where(torch.rand(far.shape, generator=g) < 0.5, -0.5 - far, 1.5 + far)
    out, (g_value, g_loc, g_attn) = grads_of(kernel, value, shapes, starts, loc, attn)
    assert torch.equal(out, torch.zeros_like(out))
    for grad in (g_value, g_loc, g_attn):
        assert torch.equal(grad, torch.zeros_like(grad))
    # points straddling the border only see their in-map corners, exactly like grid_sample
    inputs = make_inputs([(4, 5), (2, 3)], lq=40, loc_range=(-0.3, 1.3), seed=4)
    assert_matches_reference(inputs, atol=1e-10, rtol=1e-10)


@needs_ext
def test_backward_split_over_channels():
    # fewer (batch, head) tasks than threads: the backward also splits channels across threads
    old = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        inputs = make_inputs([(6, 6), (3, 3)], n=1, m=1, d=32, p=4, lq=20)
        assert_matches_reference(inputs, atol=1e-10, rtol=1e-10)
    finally:
        torch.set_num_threads(old)


_PORTABLE_CHECK = """
import torch
import mask2former._C as C
from tests.modeling.test_ms_deform_attn import assert_matches_reference, make_inputs
assert not C.cpu_uses_avx2()
assert_matches_reference(make_inputs([(6, 7), (3, 4)], n=2, m=2, d=32, p=3, lq=9), 1e-10, 1e-10)
assert_matches_reference(make_inputs([(6, 7), (3, 4)], n=1, m=3, d=7, p=3, lq=9), 1e-10, 1e-10)
print("ok")
"""


@needs_ext
def test_portable_cpu_kernels():
    # The AVX2 build is chosen at run time; ATEN_CPU_CAPABILITY=default selects the portable one.
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", PYTHONPATH=os.pathsep.join([REPO, TESTS]))
    result = subprocess.run(
        [sys.executable, "-c", _PORTABLE_CHECK], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


@needs_ext
def test_non_contiguous_inputs():
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], n=2, m=2, d=6, lq=5)
    value_nc = value.transpose(2, 3).contiguous().transpose(2, 3)  # (N, S, M, D) view, strided
    loc_nc = torch.stack([loc, loc], dim=-1)[..., 0]
    attn_nc = attn.transpose(0, 1).contiguous().transpose(0, 1)
    starts_nc = torch.stack([starts, starts], 1)[:, 0]
    assert not (value_nc.is_contiguous() or loc_nc.is_contiguous() or attn_nc.is_contiguous())
    out_k, grads_k = grads_of(kernel, value_nc, shapes, starts_nc, loc_nc, attn_nc)
    out_r, grads_r = grads_of(reference, value, shapes, starts, loc, attn)
    torch.testing.assert_close(out_k, out_r, atol=1e-10, rtol=1e-10)
    for gk, gr in zip(grads_k, grads_r):
        torch.testing.assert_close(gk, gr, atol=1e-10, rtol=1e-10)


@needs_ext
def test_zero_size_batch():
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], n=0, m=2, d=6, lq=5)
    out, grads = grads_of(kernel, value, shapes, starts, loc, attn)
    assert out.shape == (0, 5, 12)
    assert [tuple(g.shape) for g in grads] == [tuple(value.shape), tuple(loc.shape), tuple(attn.shape)]


@needs_ext
def test_kernel_selection():
    value = torch.zeros(1, 1, 1, 1)
    assert kernel_supports(value) and kernel_supports(value.double())
    assert not kernel_supports(value.bfloat16()) and not kernel_supports(value.half())


def test_other_dtypes_use_pytorch_path():
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], dtype=torch.float32)
    out = ms_deform_attn(value.bfloat16(), shapes, starts, loc, attn)
    assert out.dtype == torch.bfloat16
    expected = ms_deform_attn_core_pytorch(value.bfloat16().float(), shapes, loc, attn)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)


# ---------------------------------------------------------------- input validation


def test_mismatched_spatial_shapes_raise():
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)])
    with pytest.raises(ValueError, match="S=30"):
        ms_deform_attn(value, torch.tensor([[4, 6], [2, 2]]), starts, loc, attn)
    with pytest.raises(ValueError, match="level_start_index"):
        ms_deform_attn(value, shapes, torch.tensor([0, 23]), loc, attn)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        ms_deform_attn(value, shapes, starts, loc, attn[:, :, :1])


@needs_ext
def test_function_dtype_errors():
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)])
    with pytest.raises(TypeError, match="dtype"):
        MSDeformAttnFunction.apply(value, shapes, starts, loc.float(), attn.float(), 64)
    with pytest.raises(TypeError, match="integer"):
        MSDeformAttnFunction.apply(value, shapes.double(), starts, loc, attn, 64)
    with pytest.raises(ValueError, match="im2col_step"):
        MSDeformAttnFunction.apply(value, shapes, starts, loc, attn, 0)


# ---------------------------------------------------------------- fallback


def test_fallback_when_extension_missing(monkeypatch):
    monkeypatch.setattr(ms_deform_attn_func, "_load_extension", lambda: None)
    calls = []
    real = ms_deform_attn_func.ms_deform_attn_core_pytorch

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(ms_deform_attn_func, "ms_deform_attn_core_pytorch", spy)
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)])
    assert not kernel_supports(value)
    out = ms_deform_attn(value, shapes, starts, loc, attn)
    assert calls == [1]
    torch.testing.assert_close(out, real(value, shapes, loc, attn))
    with pytest.raises(RuntimeError, match="mask2former._C"):
        MSDeformAttnFunction.apply(value, shapes, starts, loc, attn, 64)


def test_missing_extension_warns_once(monkeypatch, caplog):
    def fail(name):
        raise ImportError(f"No module named {name!r}")

    ms_deform_attn_func._load_extension.cache_clear()
    monkeypatch.setattr(ms_deform_attn_func.importlib, "import_module", fail)
    try:
        with caplog.at_level(logging.WARNING, logger=ms_deform_attn_func.__name__):
            assert not extension_available()
            value = torch.zeros(1, 1, 1, 1)
            assert not kernel_supports(value) and not kernel_supports(value)
        warnings = [r for r in caplog.records if "PyTorch implementation" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        monkeypatch.undo()
        ms_deform_attn_func._load_extension.cache_clear()
    assert extension_available() == HAS_EXT


# ---------------------------------------------------------------- module


def test_module_parameters_and_init():
    attn = MSDeformAttn(d_model=64, n_levels=3, n_heads=4, n_points=2)
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (4 * 3 * 2 * 2, 64),
        "sampling_offsets.bias": (48,),
        "attention_weights.weight": (24, 64),
        "attention_weights.bias": (24,),
        "value_proj.weight": (64, 64),
        "value_proj.bias": (64,),
        "output_proj.weight": (64, 64),
        "output_proj.bias": (64,),
    }
    assert attn.im2col_step == 128
    bias = attn.sampling_offsets.bias.view(4, 3, 2, 2)
    # head h points along angle 2*pi*h/4, scaled so the larger coordinate is 1, point i at i+1
    expected_dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for i in range(2):
        torch.testing.assert_close(bias[:, 1, i], expected_dirs * (i + 1), atol=1e-6, rtol=0)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.bias) == 0
    assert torch.count_nonzero(attn.value_proj.bias) == 0 and torch.count_nonzero(attn.output_proj.bias) == 0
    bound = math.sqrt(6.0 / (64 + 64))
    assert attn.value_proj.weight.abs().max() <= bound and attn.value_proj.weight.std() > bound / 3


def test_module_warns_on_non_power_of_2_head_dim():
    with pytest.warns(UserWarning, match="power of 2"):
        MSDeformAttn(d_model=60, n_levels=1, n_heads=4, n_points=1)


def _module_inputs(ref_dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[8, 10], [4, 5], [2, 3]])
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s = int(sizes.sum())
    x = torch.randn(2, s, 32, generator=g)
    query = torch.randn(2, 7, 32, generator=g)
    ref = torch.rand(2, 7, 3, ref_dim, generator=g)
    if ref_dim == 4:
        ref[..., 2:] = ref[..., 2:] * 0.5
    mask = torch.zeros(2, s, dtype=torch.bool)
    mask[1, -20:] = True
    return query, ref, x, shapes, starts, mask


def _run_module(module, inputs):
    module.zero_grad()
    out = module(*inputs)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in module.named_parameters()}


@needs_ext
@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_kernel_matches_pytorch_path(monkeypatch, ref_dim):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=3)
    with torch.no_grad():  # non-trivial offsets and weights
        module.sampling_offsets.weight.normal_(0, 0.5)
        module.attention_weights.weight.normal_(0, 0.5)
    inputs = _module_inputs(ref_dim)
    out_k, grads_k = _run_module(module, inputs)
    monkeypatch.setattr(ms_deform_attn_func, "_load_extension", lambda: None)
    out_r, grads_r = _run_module(module, inputs)
    torch.testing.assert_close(out_k, out_r, atol=1e-5, rtol=1e-5)
    for k in grads_r:
        torch.testing.assert_close(grads_k[k], grads_r[k], atol=1e-4, rtol=1e-4, msg=lambda s: f"{k}: {s}")


def test_module_padding_mask_and_errors():
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    query, ref, x, shapes, starts, mask = _module_inputs(2)
    out = module(query, ref, x, shapes, starts, mask)
    assert out.shape == (2, 7, 32)
    # masked positions hold no value: changing their input changes nothing
    x2 = x.clone()
    x2[mask] = 100.0
    torch.testing.assert_close(module(query, ref, x2, shapes, starts, mask), out)
    with pytest.raises(ValueError, match="reference_points"):
        module(query, ref[..., :1], x, shapes, starts, mask)
    with pytest.raises(ValueError, match="S=105"):
        module(query, ref, x[:, :-1], shapes, starts, None)


# ---------------------------------------------------------------- CUDA kernel


@needs_cuda
@pytest.mark.parametrize(
    "dtype,atol", [(torch.float32, 1e-4), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)]
)
@pytest.mark.parametrize("channels", [32, 30, 5])
def test_cuda_matches_reference(dtype, atol, channels):
    value, shapes, starts, loc, attn = make_inputs(
        [(16, 16), (8, 8), (4, 4)], n=2, m=8, d=channels, p=4, lq=200, dtype=torch.float32
    )
    cuda = [t.cuda() for t in (value, shapes, starts, loc, attn)]
    grad_out = torch.randn(2, 200, 8 * channels)
    out_k, grads_k = grads_of(ms_deform_attn, cuda[0].to(dtype), *cuda[1:], grad_out=grad_out.cuda())
    out_r, grads_r = grads_of(reference, value, shapes, starts, loc, attn, grad_out=grad_out)
    assert out_k.dtype == dtype and grads_k[0].dtype == dtype
    torch.testing.assert_close(out_k.float().cpu(), out_r, atol=atol, rtol=atol)
    scale = [g.abs().max() for g in grads_r]
    for gk, gr, sc in zip(grads_k, grads_r, scale):
        torch.testing.assert_close(gk.float().cpu() / sc, gr / sc, atol=atol, rtol=atol)


@needs_cuda
def test_cuda_zero_batch_and_outside_points():
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], n=0, dtype=torch.float32)
    out = ms_deform_attn(value.cuda(), shapes.cuda(), starts.cuda(), loc.cuda(), attn.cuda())
    assert out.shape == (0, 5, 8)
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], dtype=torch.float32)
    out = ms_deform_attn(value.cuda(), shapes.cuda(), starts.cuda(), (loc + 3).cuda(), attn.cuda())
    assert torch.count_nonzero(out) == 0
