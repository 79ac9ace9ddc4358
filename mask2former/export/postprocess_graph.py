"""
The dense step of the post-processing, for one block of output rows, as a small ONNX graph
written beside an exported model (``postprocess.onnx``). ``demo/onnx_predictor.py`` runs it
with onnxruntime in place of the NumPy version of
:func:`~mask2former.export.postprocess_numpy.dense_block`; the rest of the post-processing
(the panoptic and instance bookkeeping) stays in NumPy.

Why: NumPy's OpenBLAS computes the semantic mixing, a (K, Q) @ (Q, H * W) product, at a
third of onnxruntime's speed on this CPU (512x768, K = 133, Q = 100, 2 threads: 177 ms
against 71 ms), and its ``exp`` runs on one core. The block's three results in onnxruntime
took 94 ms against NumPy's 312 ms (320 against 781 ms at 800x1333), before the outputs were
reduced to the kept queries.

    rows (n, j), columns (Q, j, W), mixing (K, Q), panoptic_queries (P,), instance_queries (U,) ->
        scores (K, n * W) = mixing @ sigmoid(rows @ columns) as (Q, n * W),
        panoptic_probs (P, n, W) = the panoptic queries' probabilities,
        instance_masks (U, n, W) bool = the instance queries' logits > 0,
        instance_inside (U,) = the sum of their probabilities inside those masks

The full (Q, n, W) logits and probabilities stay inside onnxruntime: only the few queries the
panoptic and instance inference keep come out (as ``dense_block``'s NumPy version returns).
"""
import os

FILE_NAME = "postprocess.onnx"


def dense_block_graph(opset: int):
    """The ``onnx.ModelProto`` of the block step at ``opset`` (the model export's: the same
    runtime runs both); every dimension is dynamic."""
    from onnx import TensorProto, helper

    def tensor(name: str, dims, dtype=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, dtype, dims)

    def constant(name: str, dtype, dims, values):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, dims, values))

    nodes = [
        # -logits, (n, j) @ (Q, j, W): (Q, n, W); negating the few rows rather than the logits
        # saves a pass over them (negation is exact: the same values as negating after)
        helper.make_node("Neg", ["rows"], ["minus_rows"]),
        helper.make_node("MatMul", ["minus_rows", "columns"], ["minus_logits"]),
        # 1 / (1 + exp(-x)), not Sigmoid: onnxruntime's Sigmoid is a rational approximation
        # whose error (about 1e-7) is larger than the probabilities far outside every mask, where
        # the semantic argmax then differs; its Exp keeps the relative error small
        helper.make_node("Exp", ["minus_logits"], ["exp_minus_logits"]),
        constant("one", TensorProto.FLOAT, [], [1.0]),
        helper.make_node("Add", ["exp_minus_logits", "one"], ["denominator"]),
        helper.make_node("Reciprocal", ["denominator"], ["probs"]),
        # semantic scores: (K, Q) @ (Q, n * W)
        helper.make_node("Shape", ["columns"], ["queries"], start=0, end=1),
        constant("minus_one", TensorProto.INT64, [1], [-1]),
        helper.make_node("Concat", ["queries", "minus_one"], ["by_query_shape"], axis=0),
        helper.make_node("Reshape", ["probs", "by_query_shape"], ["by_query"]),
        helper.make_node("MatMul", ["mixing", "by_query"], ["scores"]),
        # the panoptic and instance queries only
        helper.make_node("Gather", ["probs", "panoptic_queries"], ["panoptic_probs"], axis=0),
        helper.make_node("Gather", ["minus_logits", "instance_queries"], ["instance_minus_logits"], axis=0),
        constant("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_node("Less", ["instance_minus_logits", "zero"], ["instance_masks"]),  # logits > 0
        helper.make_node("Gather", ["probs", "instance_queries"], ["instance_probs"], axis=0),
        # probs * mask, not Where(mask, probs, 0): the same values, and onnxruntime's Where with a
        # broadcast scalar took half of the block's time (2.4 of 5 ms for 50 queries at 7x1333)
        helper.make_node("Cast", ["instance_masks"], ["instance_masks_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["instance_probs", "instance_masks_float"], ["instance_probs_inside"]),
        constant("pixel_axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_node("ReduceSum", ["instance_probs_inside", "pixel_axes"], ["instance_inside"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "mask2former_postprocess_block",
        [tensor("rows", ["n", "j"]), tensor("columns", ["Q", "j", "W"]), tensor("mixing", ["K", "Q"]),
         tensor("panoptic_queries", ["P"], TensorProto.INT64), tensor("instance_queries", ["U"], TensorProto.INT64)],
        [tensor("scores", ["K", "nW"]), tensor("panoptic_probs", ["P", "n", "W"]),
         tensor("instance_masks", ["U", "n", "W"], TensorProto.BOOL), tensor("instance_inside", ["U"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="mask2former")
    model.ir_version = 8  # onnxruntime 1.20 reads up to 10; 8 is what opset 17 needs
    return model


def write_dense_block_graph(output_dir: str, opset: int) -> str:
    """Writes :func:`dense_block_graph` to ``output_dir/postprocess.onnx``; returns the path."""
    import onnx

    path = os.path.join(output_dir, FILE_NAME)
    onnx.save(dense_block_graph(opset), path)
    return path
