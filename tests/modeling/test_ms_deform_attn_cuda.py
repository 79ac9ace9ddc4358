"""CUDA kernel stress cases (skipped without a GPU): large heads in fp32, a misaligned value,
Lq*M not a multiple of 8, more than 2^31 value elements, both gradient reductions and the
run-to-run spread of the backward. `benchmarks/gpu_check.sh` runs them, also under
compute-sanitizer (all but the >2^31-element case and the spread)."""

import pytest
import torch

from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn
from tests.modeling.test_ms_deform_attn import grads_of, make_inputs, needs_cuda, reference

pytestmark = needs_cuda

REDUCE_ENV = "MASK2FORMER_MSDA_GRAD_REDUCE"


def _cuda_vs_reference(inputs, dtype=torch.float32, atol=1e-4, value_offset=0):
    """Kernel on the GPU (value in `dtype`, optionally starting `value_offset` elements into
    its storage, so misaligned) against the float64 CPU reference, gradients scaled by their max."""
    value, shapes, starts, loc, attn = inputs
    grad_out = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3], dtype=torch.float64)
    v = value.cuda().to(dtype)
    if value_offset:
        storage = torch.empty(v.numel() + value_offset, dtype=dtype, device="cuda")
        v = storage[value_offset:].view(v.shape).copy_(v)
    out_k, grads_k = grads_of(ms_deform_attn, v, shapes.cuda(), starts.cuda(), loc.float().cuda(),
                              attn.float().cuda(), grad_out=grad_out.float().cuda())
    out_r, grads_r = grads_of(reference, value.double(), shapes, starts, loc.double(), attn.double(),
                              grad_out=grad_out)
    torch.testing.assert_close(out_k.double().cpu(), out_r, atol=atol, rtol=atol)
    for name, gk, gr in zip(("value", "sampling_locations", "attention_weights"), grads_k, grads_r):
        sc = gr.abs().max()
        torch.testing.assert_close(gk.double().cpu() / sc, gr / sc, atol=atol, rtol=atol,
                                   msg=lambda s: f"grad {name}: {s}")


@pytest.mark.parametrize("reduce", ["", "atomic"])
@pytest.mark.parametrize("channels", [24, 30, 48, 64, 96, 128, 256])
def test_fp32_head_dims(monkeypatch, channels, reduce):
    """D = 64, 128, 256 (and 24, 30, 48, 96, whose channel groups do not divide a warp) with the
    warp-reduced and the atomic gradient paths."""
    monkeypatch.setenv(REDUCE_ENV, reduce)
    _cuda_vs_reference(make_inputs([(12, 10), (6, 5), (3, 3)], n=2, m=4, d=channels, p=4, lq=37))


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-1)])
@pytest.mark.parametrize("offset", [1, 3])
def test_misaligned_value(dtype, atol, offset):
    """A value whose storage starts off the 16-byte boundary takes the scalar loads."""
    _cuda_vs_reference(make_inputs([(8, 8), (4, 4)], n=1, m=8, d=32, p=4, lq=21), dtype, atol, offset)


@pytest.mark.parametrize("lq,m", [(7, 3), (13, 5), (1, 1)])
def test_queries_times_heads_not_a_multiple_of_8(lq, m):
    _cuda_vs_reference(make_inputs([(9, 7), (5, 4)], n=3, m=m, d=32, p=3, lq=lq))


def test_backward_run_to_run_spread():
    """The value gradient is summed with float atomics, so runs differ by rounding only."""
    value, shapes, starts, loc, attn = [t.cuda() for t in make_inputs(
        [(32, 32), (16, 16), (8, 8)], n=2, m=8, d=32, p=4, lq=1344, dtype=torch.float32,
        loc_range=(0.3, 0.35))]  # crowded points: many atomics on the same addresses
    runs = [grads_of(ms_deform_attn, value, shapes, starts, loc, attn)[1] for _ in range(5)]
    for grads in runs[1:]:
        for g, g0 in zip(grads, runs[0]):
            torch.testing.assert_close(g, g0, atol=1e-5, rtol=1e-5)


def test_more_than_2_31_value_elements():
    """bf16 value of 2^31 + 2^21 elements: the second level lies past 2^31, so every offset into
    it needs 64-bit indexing. Level 0 gets zero attention; the result must equal the reference
    on level 1 alone."""
    m, d, big = 8, 32, (2048, 4100)
    s0 = big[0] * big[1]
    assert s0 * m * d > 2**31
    small = make_inputs([(16, 16)], n=1, m=m, d=d, p=4, lq=50, dtype=torch.float32)
    v1, _, _, loc1, attn1 = small
    value = torch.zeros(1, s0 + 256, m, d, dtype=torch.bfloat16, device="cuda")
    value[:, s0:] = v1.cuda().bfloat16()
    shapes = torch.tensor([big, (16, 16)])
    starts = torch.tensor([0, s0])
    loc = torch.cat([torch.rand_like(loc1), loc1], dim=3)
    attn = torch.cat([torch.zeros_like(attn1), attn1], dim=3)
    grad_out = torch.randn(1, 50, m * d)
    out_k, grads_k = grads_of(ms_deform_attn, value, shapes, starts, loc.cuda(), attn.cuda(), grad_out=grad_out.cuda())
    out_r, grads_r = grads_of(reference, v1.bfloat16().float(), *small[1:3], loc1, attn1, grad_out=grad_out)
    torch.testing.assert_close(out_k.float().cpu(), out_r, atol=3e-2, rtol=3e-2)
    grad_value_level1 = grads_k[0][:, s0:].float().cpu()
    torch.testing.assert_close(grad_value_level1, grads_r[0], atol=3e-2, rtol=3e-2)
    for gk, gr in zip(grads_k[1:], grads_r[1:]):
        sc = gr.abs().max()
        torch.testing.assert_close(gk[:, :, :, 1:].cpu() / sc, gr / sc, atol=3e-2, rtol=3e-2)
    del value, grads_k
    torch.cuda.empty_cache()
