"""CheapRecompute: tensors remade in backward instead of kept give the same gradients, bit for
bit, and are not held by the graph."""
import gc
import weakref

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mask2former.modeling.pixel_decoder.msdeformattn import (
    MSDeformAttnTransformerEncoder,
    MSDeformAttnTransformerEncoderLayer,
)
from mask2former.modeling.recompute import CheapRecompute


def _norm_then_linear(x, pos, norm, linear, recompute):
    # the linear reads a 3-D input, so it keeps a 2-D view of the norm's output
    y = recompute.layer_norm(norm, x)
    q = recompute.add(y, pos)
    return linear(q) + linear(y), weakref.ref(y), weakref.ref(q)


@pytest.fixture
def small():
    torch.manual_seed(0)
    norm, linear = nn.LayerNorm(16), nn.Linear(16, 8)
    x = torch.randn(2, 5, 16, requires_grad=True)
    pos = torch.randn(2, 5, 16)
    return x, pos, norm, linear


def _grads(x, norm, linear):
    return [t.grad.clone() for t in (x, norm.weight, norm.bias, linear.weight, linear.bias)]


@pytest.mark.parametrize("enabled", [True, False])
def test_made_tensors_are_kept_only_when_disabled(small, enabled):
    x, pos, norm, linear = small
    with CheapRecompute(enabled=enabled) as recompute:
        out, y, q = _norm_then_linear(x, pos, norm, linear, recompute)
    gc.collect()
    # enabled, the graph keeps recipes (the norm's input is kept by the norm itself)
    assert (y() is None and q() is None) == enabled
    out.square().sum().backward()


def test_gradients_are_bitwise_those_of_the_kept_tensors(small):
    x, pos, norm, linear = small
    grads = []
    for enabled in (False, True):
        for t in (x, *norm.parameters(), *linear.parameters()):
            t.grad = None
        with CheapRecompute(enabled=enabled) as recompute:
            out = _norm_then_linear(x, pos, norm, linear, recompute)[0]
        out.square().sum().backward()
        grads.append(_grads(x, norm, linear))
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_in_place_change_of_a_recipe_input_raises(small):
    x, pos, norm, linear = small
    with CheapRecompute() as recompute:
        out = _norm_then_linear(x, pos, norm, linear, recompute)[0]
    with torch.no_grad():
        pos.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        out.sum().backward()


def test_double_backward_raises(small):
    x, pos, norm, linear = small
    with CheapRecompute() as recompute:
        out = _norm_then_linear(x, pos, norm, linear, recompute)[0]
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


def test_other_saved_tensors_are_untouched(small):
    """Inside the context, tensors not made by it are kept as usual; nothing made stays held."""
    x, pos, norm, linear = small
    with CheapRecompute() as recompute:
        h = torch.relu(linear(x @ torch.eye(16)))
    h.sum().backward()
    assert x.grad is not None and recompute._made == {}


@pytest.mark.parametrize("wrapped", ["none", "checkpoint", "reentrant checkpoint", "torch.compile"])
def test_encoder_gradients_equal_those_without_recompute(wrapped):
    """The deformable encoder (which opens the context), also inside a user's own activation
    checkpointing or compiled (``aot_eager``: torch.compile's tracing and autograd planning,
    without its code generation), against the same layers called one by one without it: the
    same output and gradients, bit for bit."""
    torch.manual_seed(0)
    layer = MSDeformAttnTransformerEncoderLayer(32, 64, 0.0, n_levels=2, n_heads=4, n_points=2)
    encoder = MSDeformAttnTransformerEncoder(layer, num_layers=3)
    shapes = torch.tensor([[6, 8], [3, 4]])
    starts = torch.tensor([0, 48])
    src = torch.randn(2, 60, 32, requires_grad=True)
    pos = torch.randn(2, 60, 32, requires_grad=True)
    valid = torch.ones(2, 2, 2)

    def run(recompute: bool):
        for t in (src, pos, *encoder.parameters()):
            t.grad = None
        if not recompute:
            out = src
            refs = encoder.get_reference_points(shapes, valid, device=src.device)
            for lyr in encoder.layers:
                out = lyr(out, pos, refs, shapes, starts)
        elif wrapped == "none":
            out = encoder(src, shapes, starts, valid, pos)
        elif wrapped == "torch.compile":
            out = torch.compile(encoder, backend="aot_eager")(src, shapes, starts, valid, pos)
        else:
            reentrant = wrapped == "reentrant checkpoint"
            out = checkpoint(encoder, src, shapes, starts, valid, pos, use_reentrant=reentrant)
        out.square().sum().backward()
        return [out.detach()] + [t.grad.clone() for t in (src, pos, *encoder.parameters())]

    plain, remade = run(False), run(True)
    assert all(torch.equal(a, b) for a, b in zip(plain, remade))


def test_remade_under_the_forwards_autocast(small):
    """A tensor made under autocast is remade under it (a bf16 matmul under CPU autocast, which
    outside it would give float32)."""
    x, pos, norm, linear = small
    grads = []
    for enabled in (False, True):
        for t in (x, *linear.parameters()):
            t.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16), CheapRecompute(enabled=enabled) as recompute:
            y = recompute.made_by(torch.matmul, x, linear.weight.t())
            assert y.dtype == torch.bfloat16
            out = y * y.detach()  # keeps y itself
        out.float().square().sum().backward()
        grads.append([x.grad.clone(), linear.weight.grad.clone()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
