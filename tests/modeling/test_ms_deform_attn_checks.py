"""The op's input contract: level bounds and dtypes in the compiled checks (direct extension
calls), and host-side level tables in the Python function and module."""
import pytest
import torch

from mask2former.modeling.pixel_decoder.ops.functions import (
    MSDeformAttnFunction,
    host_levels,
    location_dtype,
    ms_deform_attn,
    ms_deform_attn_func,
)
from mask2former.modeling.pixel_decoder.ops.modules import MSDeformAttn
from tests.modeling.test_ms_deform_attn import make_inputs, needs_ext


def _ext():
    return ms_deform_attn_func._load_extension()


@needs_ext
@pytest.mark.parametrize(
    "shapes,starts",
    [
        ([[4, 6], [2, 3]], [0, 25]),  # second level ends at 31 > S = 30
        ([[4, 6], [2, 4]], [0, 24]),  # sizes sum to 32
        ([[4, 6], [-2, 3]], [0, 24]),  # negative height
        ([[4, 6], [2, 3]], [-1, 24]),  # negative start
    ],
)
def test_direct_call_with_levels_outside_value_raises(shapes, starts):
    """The extension itself refuses level tables that would index outside value (forward and
    backward), whatever the Python wrapper checked."""
    value, _, _, loc, attn = make_inputs([(4, 6), (2, 3)], dtype=torch.float32)
    shapes_t, starts_t = torch.tensor(shapes), torch.tensor(starts)
    with pytest.raises(RuntimeError, match=r"level \d .* does not fit in S=30"):
        _ext().ms_deform_attn_forward(value, shapes_t, starts_t, loc, attn)
    grad_out = torch.zeros(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3])
    with pytest.raises(RuntimeError, match="does not fit in S=30"):
        _ext().ms_deform_attn_backward(value, shapes_t, starts_t, loc, attn, grad_out)


@needs_ext
def test_direct_call_with_levels_inside_value_runs():
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], dtype=torch.float32)
    out = _ext().ms_deform_attn_forward(value, shapes, starts, loc, attn)
    torch.testing.assert_close(out, ms_deform_attn(value, shapes, starts, loc, attn))


def test_location_dtype():
    assert location_dtype(torch.float64) == torch.float64
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert location_dtype(dtype) == torch.float32


@needs_ext
def test_compiled_checks_follow_the_location_dtype():
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], dtype=torch.float32)
    for bad_loc, bad_attn in ((loc.double(), attn), (loc, attn.half()), (loc.half(), attn.half())):
        with pytest.raises(RuntimeError, match="must be Float for a Float value"):
            _ext().ms_deform_attn_forward(value, shapes, starts, bad_loc, bad_attn)
    with pytest.raises(RuntimeError, match="must be Double for a Double value"):
        _ext().ms_deform_attn_forward(value.double(), shapes, starts, loc, attn)
    # the CPU kernels have no reduced-precision build, whatever the locations
    with pytest.raises(RuntimeError, match="value must be float32 or float64, got Half"):
        _ext().ms_deform_attn_forward(value.half(), shapes, starts, loc, attn)


@needs_ext
def test_function_follows_the_location_dtype():
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], dtype=torch.float32)
    with pytest.raises(TypeError, match="must have dtype torch.float32 for a torch.float32 value"):
        MSDeformAttnFunction.apply(value, shapes, starts, loc.half(), attn.half(), 64)
    with pytest.raises(TypeError, match="must have dtype torch.float32 for a torch.float16 value"):
        MSDeformAttnFunction.apply(value.half(), shapes, starts, loc.half(), attn.half(), 64)
    # ms_deform_attn casts to the location dtype: half locations give the float32 result
    torch.testing.assert_close(
        ms_deform_attn(value, shapes, starts, loc.half(), attn.half()),
        ms_deform_attn(value, shapes, starts, loc.half().float(), attn.half().float()),
    )


def test_host_levels():
    shapes = torch.tensor([[4, 6], [2, 3]])
    assert host_levels(shapes, torch.tensor([0, 24])) == ([(4, 6), (2, 3)], [0, 24])
    assert host_levels([(4, 6), (2, 3)], [0, 24]) == ([(4, 6), (2, 3)], [0, 24])
    assert host_levels(shapes.int(), None) == ([(4, 6), (2, 3)], None)
    with pytest.raises(TypeError, match="spatial_shapes must be an integer tensor"):
        host_levels(shapes.float(), None)
    with pytest.raises(ValueError, match=r"spatial_shapes must be \(L, 2\)"):
        host_levels(torch.tensor([4, 6]), None)
    with pytest.raises(ValueError, match=r"level_start_index must be \(L,\)"):
        host_levels(shapes, torch.tensor([[0, 24]]))


@pytest.mark.parametrize("use_kernel", [True, False])
def test_host_sequences_give_the_tensor_result(monkeypatch, use_kernel):
    """Shapes and starts as Python lists (no device tensor to read) give the same output and
    gradients as tensors, in the op and in the module."""
    if not use_kernel:
        monkeypatch.setattr(ms_deform_attn_func, "_load_extension", lambda: None)
    elif not ms_deform_attn_func.extension_available():
        pytest.skip("extension not built")
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], dtype=torch.float32)
    expected = ms_deform_attn(value, shapes, starts, loc, attn)
    torch.testing.assert_close(
        ms_deform_attn(value, shapes.tolist(), starts.tolist(), loc, attn), expected, rtol=0, atol=0
    )
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    query = torch.randn(2, 5, 16)
    ref = torch.rand(2, 5, 2, 2)
    x = torch.randn(2, 30, 16)
    out_t = module(query, ref, x, shapes, starts)
    out_l = module(query, ref, x, shapes.tolist(), starts.tolist())
    torch.testing.assert_close(out_l, out_t, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"must be \(2, 2\) for n_levels=2, got 1 levels"):
        module(query, ref, x, shapes[:1], starts[:1])


@needs_ext
def test_function_passes_host_tables_to_the_extension(monkeypatch):
    """The compiled checks read the level tables; the function hands them over on the host so
    that on a GPU neither it nor the extension waits for the device."""
    seen = []
    real = _ext()

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def ms_deform_attn_forward(self, value, shapes, starts, loc, attn):
            seen.append((shapes.device.type, starts.device.type, shapes.dtype, starts.dtype))
            return real.ms_deform_attn_forward(value, shapes, starts, loc, attn)

    monkeypatch.setattr(ms_deform_attn_func, "_load_extension", lambda: Spy())
    value, shapes, starts, loc, attn = make_inputs([(4, 6), (2, 3)], dtype=torch.float32)
    ms_deform_attn(value, shapes.int(), starts.tolist(), loc, attn)
    assert seen == [("cpu", "cpu", torch.int64, torch.int64)]
