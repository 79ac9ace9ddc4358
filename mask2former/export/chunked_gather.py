"""
The sampling step of the exported deformable attention, a ``Gather`` of table rows followed by
a batched ``MatMul`` with the weights, run by onnxruntime a chunk of rows at a time (an ONNX
``Scan``) so that each chunk's gathered samples stay in the cache.

Why: as one ``Gather`` and one ``MatMul``, the (B, K, D) samples (B query-head pairs, K = 4
corners * levels * points) are written to memory and read back: about 400 MB per encoder layer
of the R50 model at 512x768, at the machine's copy bandwidth (2 threads: 28 ms + 23 ms of a
layer's 126 ms). A chunk of about ``CHUNK_BYTES`` of samples fits in a core's L2 cache (2 MiB
here); measured on that layer's shapes, 2 threads, onnxruntime 1.20: 79 ms as one pair, 18 ms
in chunks of 256 pairs (19-20 ms in chunks of 128 or 512; a ``Loop`` with ``Slice`` per chunk
took 23 ms, 33 ms in chunks of 64, 36 ms in chunks of 1024).

How: while exporting, :func:`gather_weighted_sum` appears in the traced graph as one node
``mask2former::GatherWeightedSum`` (an autograd ``Function`` with a ``symbolic``), which
:func:`expand_gather_weighted_sums` then replaces by standard operators (``Pad``, ``Scan``,
``Gather``, ``Reshape``, ``MatMul``, ``Slice``; for whole chunks, below, no ``Pad`` or ``Slice``
and a few scalar ops that pick the chunk), so that the written file needs no custom op.
Outside an ONNX export (eager PyTorch, TorchScript tracing) it is the plain ``Gather`` and
``MatMul``.

Whole chunks without padding: when the caller knows that the row count is always a multiple
of some ``rows_multiple`` (the exported encoder: every padded image has 21 * (H / 32) * (W / 32)
queries of 8 heads, so a multiple of 168 rows), the chunk is chosen at run time as the largest
multiple of it, up to ``MAX_CHUNK_BYTES``, that divides the row count, and the index and weights
are only reshaped. The ``Pad`` of the weights and the ``Slice`` of the output cost 23 ms per
encoder layer of the R50 model at 800x1344 (2 threads); chunks of 336 rows (2 MB) took the
sampling from 470-483 to 394-429 ms over the six layers (profiles, two runs each); chunks of 168
rows (1 MB) took 456-482 ms and of 504 rows (3 MB) 444-463 ms.
"""
from typing import List

import torch
from torch import Tensor

DOMAIN = "mask2former"
OP_TYPE = "GatherWeightedSum"
# gathered samples per Scan iteration: within a core's L2 cache with room for the rest
CHUNK_BYTES = 3 << 19
# largest chunk of whole multiples of rows_multiple (see the module docstring)
MAX_CHUNK_BYTES = 9 << 18


def _gather_weighted_sum(table: Tensor, index: Tensor, weights: Tensor, depth: int) -> Tensor:
    """(B, 1, K) weights @ the (B, K, D) samples ``table[index]``."""
    samples = table[index].view(index.shape[0], -1, depth)
    return torch.matmul(weights, samples)


class _GatherWeightedSumNode(torch.autograd.Function):
    """:func:`_gather_weighted_sum`, exported to ONNX as one custom node (expanded later)."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor, weights: Tensor, depth: int, samples: int, gathers: int,
                rows_multiple: int) -> Tensor:
        return _gather_weighted_sum(table, index, weights, depth)

    @staticmethod
    def symbolic(g, table, index, weights, depth: int, samples: int, gathers: int, rows_multiple: int):
        # the sizes are the model's (channels per head; levels * points [* 4 corners]): the
        # expansion's chunk shapes
        output = g.op(f"{DOMAIN}::{OP_TYPE}", table, index, weights, depth_i=depth, samples_i=samples,
                      gathers_i=gathers, rows_multiple_i=rows_multiple)
        # (B, 1, D), for the exporter's shape inference (it cannot infer a custom node's)
        output.setType(weights.type().with_sizes([None, 1, depth]))
        return output


def gather_weighted_sum(table: Tensor, index: Tensor, weights: Tensor, depth: int, rows_multiple: int = 0) -> Tensor:
    """
    Args:
        table: (R, E * depth) rows of E vectors of ``depth`` values.
        index: (B, G) int64 rows of ``table`` to read for each of B outputs.
        weights: (B, 1, G * E) weights of the G * E vectors read.
        depth: D, the vectors' length.
        rows_multiple: B is a multiple of this for every input the exported graph will get (0:
            not known). Only the ONNX export uses it: its chunks are then whole.
    Returns:
        (B, 1, D): each output's weighted sum of its vectors.
    """
    if torch.onnx.is_in_onnx_export():
        # a traced shape is a tensor: the node takes the sizes as constants
        return _GatherWeightedSumNode.apply(
            table, index, weights, int(depth), int(weights.shape[-1]), int(index.shape[-1]), int(rows_multiple))
    return _gather_weighted_sum(table, index, weights, depth)


def _chunk_rows(weights_per_row: int, depth: int) -> int:
    return max(1, CHUNK_BYTES // (4 * weights_per_row * depth))


def _whole_chunk_multiples(rows_multiple: int, weights_per_row: int, depth: int) -> List[int]:
    """The multiples k of ``rows_multiple`` that a chunk of whole multiples may have (largest
    first, 1 last); empty when even one multiple is more than ``MAX_CHUNK_BYTES``, or none is
    known."""
    row_bytes = 4 * weights_per_row * depth
    if rows_multiple <= 0 or rows_multiple * row_bytes > MAX_CHUNK_BYTES:
        return []
    return list(range(MAX_CHUNK_BYTES // (rows_multiple * row_bytes), 0, -1))


class _Builder:
    """Names and constants of one node's expansion, named after the node (its module path), so
    that profiles attribute them to it."""

    def __init__(self, node):
        self.prefix = f"{node.name or node.output[0]}/chunked"

    def name(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    def const(self, suffix: str, values: List[int]):
        from onnx import TensorProto, helper

        return helper.make_node(
            "Constant", [], [self.name(suffix)],
            value=helper.make_tensor(self.name(suffix), TensorProto.INT64, [len(values)], values))

    def named(self, nodes: List, part: str) -> List:
        for k, created in enumerate(nodes):
            created.name = self.name(f"{part}/{created.op_type}_{k}")
        return nodes

    def scan(self, table: str, index_chunks: str, weights_chunks: str, stacked: str, chunk, depth: int,
             samples: int, gathers: int):
        """The ``Scan`` over (chunks, chunk, G) index and (chunks, chunk, 1, G * E) weights
        chunks giving (chunks, chunk, 1, D); the table is read from the enclosing graph."""
        from onnx import TensorProto, helper

        name = self.name
        body = helper.make_graph(
            self.named([
                self.const("sample_shape", [-1, samples, depth]),
                helper.make_node("Gather", [table, name("index_chunk")], [name("rows")]),
                helper.make_node("Reshape", [name("rows"), name("sample_shape")], [name("samples")]),
                helper.make_node("MatMul", [name("weights_chunk"), name("samples")], [name("sums")]),
            ], "body"),
            name("body"),
            [helper.make_tensor_value_info(name("index_chunk"), TensorProto.INT64, [chunk, gathers]),
             helper.make_tensor_value_info(name("weights_chunk"), TensorProto.FLOAT, [chunk, 1, samples])],
            [helper.make_tensor_value_info(name("sums"), TensorProto.FLOAT, [chunk, 1, depth])],
        )
        return helper.make_node("Scan", [index_chunks, weights_chunks], [stacked], body=body, num_scan_inputs=2)


def _padded_expansion(node, chunk: int, depth: int, samples: int, gathers: int):
    """(nodes of the main graph) replacing one GatherWeightedSum node: pad the index and the
    weights to whole chunks, ``Scan`` the chunks, drop the padding."""
    from onnx import helper

    table, index, weights = node.input
    b = _Builder(node)
    name, const = b.name, b.const
    outer = [
        const("chunk", [chunk]),
        const("chunk_minus_one", [chunk - 1]),
        const("zero", [0]),
        const("zeros_2", [0, 0]),
        const("zeros_3", [0, 0, 0]),
        const("index_chunks_shape", [-1, chunk, gathers]),
        const("weights_chunks_shape", [-1, chunk, 1, samples]),
        const("output_shape", [-1, 1, depth]),
        helper.make_node("Shape", [index], [name("count")], start=0, end=1),  # [B]
        helper.make_node("Add", [name("count"), name("chunk_minus_one")], [name("count_up")]),
        helper.make_node("Div", [name("count_up"), name("chunk")], [name("chunks")]),  # ceil(B / chunk)
        helper.make_node("Mul", [name("chunks"), name("chunk")], [name("padded_count")]),
        helper.make_node("Sub", [name("padded_count"), name("count")], [name("padding")]),
        # pads: begin of every axis, then end of every axis; row 0 and weight 0 for the padding
        helper.make_node("Concat", [name("zeros_2"), name("padding"), name("zero")], [name("index_pads")], axis=0),
        helper.make_node("Concat", [name("zeros_3"), name("padding"), name("zeros_2")], [name("weights_pads")], axis=0),
        helper.make_node("Pad", [index, name("index_pads")], [name("index_padded")]),
        helper.make_node("Pad", [weights, name("weights_pads")], [name("weights_padded")]),
        helper.make_node("Reshape", [name("index_padded"), name("index_chunks_shape")], [name("index_chunks")]),
        helper.make_node("Reshape", [name("weights_padded"), name("weights_chunks_shape")], [name("weights_chunks")]),
        b.scan(table, name("index_chunks"), name("weights_chunks"), name("stacked"), chunk, depth, samples,
               gathers),  # (chunks, chunk, 1, D)
        helper.make_node("Reshape", [name("stacked"), name("output_shape")], [name("padded_sums")]),
        helper.make_node("Slice", [name("padded_sums"), name("zero"), name("count"), name("zero")], list(node.output)),
    ]
    return b.named(outer, "outer")


def _whole_chunks_expansion(node, rows_multiple: int, multiples: List[int], depth: int, samples: int,
                            gathers: int):
    """(nodes of the main graph) replacing one GatherWeightedSum node whose row count B is
    always a multiple of ``rows_multiple``: the chunk is ``rows_multiple`` times the first of
    ``multiples`` that divides B / ``rows_multiple`` (found at run time: 1 always does), and
    the index and weights are only reshaped into chunks."""
    from onnx import TensorProto, helper

    table, index, weights = node.input
    b = _Builder(node)
    name, const = b.name, b.const
    outer = [
        const("rows_multiple", [rows_multiple]),
        const("multiples", multiples),
        const("zero", [0]),
        const("minus_one", [-1]),
        const("gathers", [gathers]),
        const("one_samples", [1, samples]),
        const("output_shape", [-1, 1, depth]),
        helper.make_node("Shape", [index], [name("count")], start=0, end=1),  # [B]
        helper.make_node("Div", [name("count"), name("rows_multiple")], [name("blocks")]),
        helper.make_node("Mod", [name("blocks"), name("multiples")], [name("remainders")]),
        helper.make_node("Equal", [name("remainders"), name("zero")], [name("divides")]),
        helper.make_node("Cast", [name("divides")], [name("divides_int")], to=TensorProto.INT32),  # ArgMax's input
        # the first largest: the first multiple that divides
        helper.make_node("ArgMax", [name("divides_int")], [name("choice")], axis=0, keepdims=1),
        helper.make_node("Gather", [name("multiples"), name("choice")], [name("multiple")]),
        helper.make_node("Mul", [name("multiple"), name("rows_multiple")], [name("chunk")]),
        helper.make_node("Concat", [name("minus_one"), name("chunk"), name("gathers")], [name("index_chunks_shape")],
                         axis=0),
        helper.make_node("Concat", [name("minus_one"), name("chunk"), name("one_samples")],
                         [name("weights_chunks_shape")], axis=0),
        helper.make_node("Reshape", [index, name("index_chunks_shape")], [name("index_chunks")]),
        helper.make_node("Reshape", [weights, name("weights_chunks_shape")], [name("weights_chunks")]),
        b.scan(table, name("index_chunks"), name("weights_chunks"), name("stacked"), "chunk", depth, samples,
               gathers),  # (chunks, chunk, 1, D)
        helper.make_node("Reshape", [name("stacked"), name("output_shape")], list(node.output)),
    ]
    return b.named(outer, "outer")


def expand_gather_weighted_sums(model) -> int:
    """
    Replaces, in the ``onnx.ModelProto`` ``model`` (in place), every
    ``mask2former::GatherWeightedSum`` node by the standard-operator chunked loop and drops
    the custom domain from its opsets.

    Returns:
        the number of nodes replaced.
    """
    from onnx import helper

    graph = model.graph
    nodes, replaced = [], 0
    for node in graph.node:
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        depth, samples, gathers = attributes["depth"], attributes["samples"], attributes["gathers"]
        rows_multiple = attributes.get("rows_multiple", 0)
        multiples = _whole_chunk_multiples(rows_multiple, samples, depth)
        if multiples:
            nodes.extend(_whole_chunks_expansion(node, rows_multiple, multiples, depth, samples, gathers))
        else:
            nodes.extend(_padded_expansion(node, _chunk_rows(samples, depth), depth, samples, gathers))
        replaced += 1
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [opset for opset in model.opset_import if opset.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return replaced

