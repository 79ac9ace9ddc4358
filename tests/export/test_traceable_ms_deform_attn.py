"""The deformable attention of traced graphs: the PyTorch reference's values, and a trace made
at one feature size computes other sizes."""
import pytest
import torch

from mask2former.export import chunked_gather
from mask2former.export.traceable_ms_deform_attn import ms_deform_attn_traceable
from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn_core_pytorch

N, M, D, LQ, P = 2, 2, 4, 5, 3
NAMES = ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"]


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


def test_points_on_and_far_outside_the_border():
    """Zero padding: points far outside read zero, points on the border half a pixel."""
    value, shapes, starts, _, weights = random_inputs([(6, 8), (3, 4), (2, 2)])
    edges = torch.tensor([-5.0, -0.1, 0.0, 1.0, 1.0 + 1 / 16, 1.1, 7.0])
    g = torch.Generator().manual_seed(2)
    locations = edges[torch.randint(0, len(edges), (N, LQ, M, 3, P, 2), generator=g)]
    expected = ms_deform_attn_core_pytorch(value, shapes, locations, weights)
    torch.testing.assert_close(ms_deform_attn_traceable(value, shapes, starts, locations, weights), expected,
                               rtol=0, atol=1e-6)


def _export_op(path: str, inputs, query_multiple: int = 0) -> None:
    """The op alone, exported as the exporter does: traced with its custom sampling node, which
    is then expanded into standard operators."""
    import onnx

    class Op(torch.nn.Module):
        def forward(self, *inputs):
            return ms_deform_attn_traceable(*inputs, query_multiple=query_multiple)

    torch.onnx.export(Op(), inputs, path, opset_version=17, input_names=NAMES, custom_opsets={chunked_gather.DOMAIN: 1},
                      dynamic_axes={"value": {1: "s"}, "sampling_locations": {1: "q"}, "attention_weights": {1: "q"}})
    model = onnx.load(path)
    assert chunked_gather.expand_gather_weighted_sums(model) == 1
    onnx.save(model, path)


def _run_onnx(path: str, inputs):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {i.name: inputs[NAMES.index(i.name)].numpy() for i in session.get_inputs()})[0])


def test_onnx_graph_gathers_instead_of_grid_sample(tmp_path):
    """onnxruntime runs the exported op at another feature size, with standard operators only
    and without GridSample (slow there)."""
    import onnx

    path = str(tmp_path / "op.onnx")
    _export_op(path, random_inputs([(6, 8), (3, 4), (2, 2)]))
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert {opset.domain for opset in model.opset_import} <= {"", "ai.onnx"}
    assert "GridSample" not in {node.op_type for node in model.graph.node}
    assert "Scan" in {node.op_type for node in model.graph.node}
    other = random_inputs([(7, 5), (4, 3), (2, 1)], seed=1)
    expected = ms_deform_attn_core_pytorch(other[0], other[1], other[3], other[4])
    torch.testing.assert_close(_run_onnx(path, other), expected, rtol=0, atol=1e-5)


def _assert_equals_reference_with(path: str, queries: int) -> None:
    """The exported op at another feature size with ``queries`` queries equals the reference."""
    value, shapes, starts, _, _ = random_inputs([(5, 7), (3, 3), (1, 2)], seed=2)
    g = torch.Generator().manual_seed(3)
    locations = torch.rand(N, queries, M, 3, P, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(N, queries, M, 3, P, generator=g).softmax(-1)
    expected = ms_deform_attn_core_pytorch(value, shapes, locations, weights)
    torch.testing.assert_close(_run_onnx(path, (value, shapes, starts, locations, weights)), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("queries", [1, 3, 4, 5, 9])
def test_chunked_sampling_covers_every_query_with_any_remainder(tmp_path, monkeypatch, queries):
    """Chunks of 5 query-head pairs (N * M = 4 pairs per query here): 4, 12, 16, 20 and 36 pairs,
    below a chunk, whole chunks and partial last chunks, equal the reference."""
    samples = 3 * P * 4  # levels * points * corners
    monkeypatch.setattr(chunked_gather, "CHUNK_BYTES", 5 * 4 * samples * D)
    path = str(tmp_path / "op.onnx")
    _export_op(path, random_inputs([(6, 8), (3, 4), (2, 2)]))
    _assert_equals_reference_with(path, queries)


@pytest.mark.parametrize("queries", [3, 6, 9, 12, 18])
def test_whole_chunks_when_the_query_count_is_a_known_multiple(tmp_path, monkeypatch, queries):
    """Query counts known to be multiples of 3, so query-head pairs multiples of M * 3 = 6, and
    room for chunks of 1, 2 or 3 such multiples: the graph only reshapes (no Pad, no Slice) and
    picks at run time a chunk that divides the pairs (12 to 72 pairs: 2, 4, 6, 8 or 12
    multiples of 6); the results equal the reference."""
    import onnx

    samples = 3 * P * 4
    monkeypatch.setattr(chunked_gather, "MAX_CHUNK_BYTES", 3 * M * 3 * 4 * samples * D)
    assert chunked_gather._whole_chunk_multiples(M * 3, samples, D) == [3, 2, 1]
    path = str(tmp_path / "op.onnx")
    inputs = random_inputs([(6, 8), (3, 4), (2, 2)])
    _export_op(path, inputs, query_multiple=3)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    sampling = {node.op_type for node in model.graph.node if "GatherWeightedSum" in node.name}
    assert "Scan" in sampling and not {"Pad", "Slice"} & sampling
    _assert_equals_reference_with(path, queries)


def test_padded_chunks_when_a_multiple_is_too_large(monkeypatch):
    """A known multiple whose rows alone exceed MAX_CHUNK_BYTES falls back to padded chunks."""
    monkeypatch.setattr(chunked_gather, "MAX_CHUNK_BYTES", 1000)
    assert chunked_gather._whole_chunk_multiples(8, 48, 32) == []
    assert chunked_gather._whole_chunk_multiples(0, 48, 32) == []


def test_module_traced_from_offsets_equals_the_kernel_path():
    """MSDeformAttn while traceable computes the points' pixel coordinates from the offsets
    directly (reference * size - 0.5 + offset); its output equals the compiled kernel's path,
    reference points inside and outside the maps included."""
    from mask2former.modeling.pixel_decoder.ops.modules import MSDeformAttn

    torch.manual_seed(0)
    attention = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=3).eval()
    with torch.no_grad():
        attention.sampling_offsets.weight.normal_(0, 0.5)  # offsets of a few pixels
        attention.sampling_offsets.bias.normal_(0, 2.0)
    shapes = torch.tensor([(6, 8), (3, 4), (2, 2)])
    starts = torch.cat((shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]))
    query, value = torch.randn(2, 7, 32), torch.randn(2, int(shapes.prod(1).sum()), 32)
    references = torch.rand(2, 7, 3, 2) * 1.4 - 0.2
    with torch.no_grad():
        expected = attention(query, references, value, shapes, starts)
        attention.traceable = True
        got = attention(query, references, value, shapes, starts)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
