"""The deformable attention of traced graphs: the PyTorch reference's values, and a trace made
at one feature size computes other sizes."""
import torch

from mask2former.export.traceable_ms_deform_attn import ms_deform_attn_traceable
from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn_core_pytorch

N, M, D, LQ, P = 2, 2, 4, 5, 3


def random_inputs(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))
    value = torch.randn(N, int(sizes.sum()), M, D, generator=g)
    # some locations outside [0, 1]: zero padding
    locations = torch.rand(N, LQ, M, len(shapes), P, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(N, LQ, M, len(shapes), P, generator=g).softmax(-1)
    return value, spatial_shapes, level_start_index, locations, weights


def test_traceable_equals_reference():
    inputs = random_inputs([(6, 8), (3, 4), (2, 2)])
    expected = ms_deform_attn_core_pytorch(inputs[0], inputs[1], inputs[3], inputs[4])
    torch.testing.assert_close(ms_deform_attn_traceable(*inputs), expected, rtol=0, atol=1e-6)


def test_trace_follows_the_feature_sizes():
    traced = torch.jit.trace(ms_deform_attn_traceable, random_inputs([(6, 8), (3, 4), (2, 2)]))
    other = random_inputs([(7, 5), (4, 3), (2, 1)], seed=1)
    expected = ms_deform_attn_core_pytorch(other[0], other[1], other[3], other[4])
    torch.testing.assert_close(traced(*other), expected, rtol=0, atol=1e-6)
