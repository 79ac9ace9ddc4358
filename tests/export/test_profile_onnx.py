"""tools/deploy/profile_onnx.py: onnxruntime's node times summed by stage and operator type."""
import importlib.util
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool():
    spec = importlib.util.spec_from_file_location("profile_onnx", os.path.join(REPO, "tools", "deploy", "profile_onnx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_model(path: str) -> None:
    """image (1, 3, H, W) -> a backbone Conv -> a decoder Transpose, named as a traced model's
    nodes and outputs (onnxruntime names the nodes it rewrites after their outputs)."""
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), dtype=np.float32), "weight")
    features = "/backbone/stem/conv1/Conv_output_0"
    nodes = [helper.make_node("Conv", ["image", "weight"], [features], name="/backbone/stem/conv1/Conv", pads=[1] * 4),
             helper.make_node("Transpose", [features], ["out"], name="/sem_seg_head/predictor/Transpose", perm=[0, 1, 3, 2])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, "w", "h"])], initializer=[weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_node_times_by_stage_and_operator(tmp_path):
    tool = load_tool()
    path = str(tmp_path / "model.onnx")
    tiny_model(path)
    nodes = tool.profile_run(path, 32, 48, threads=1)
    stages = dict(tool.totals(nodes, lambda n: tool.stage_of(n["name"])))
    assert {"backbone", "transformer decoder"} <= set(stages)
    assert all(n["us"] >= 0 for n in nodes) and sum(stages.values()) == sum(n["us"] for n in nodes)
    text = tool.report(nodes, top=5)
    assert text.startswith("operator time:") and "by operator type" in text and "backbone" in text


def test_stage_names_follow_the_module_paths():
    tool = load_tool()
    assert tool.stage_of("/sem_seg_head/transformer/encoder/layers.3/self_attn/Gather_8") == "pixel decoder: deformable encoder"
    assert tool.stage_of("/sem_seg_head/layer_1/Conv") == "pixel decoder: rest"
    assert tool.stage_of("ReorderOutput") == "other (layout changes, graph inputs)"


def test_chunked_sampling_counts_once_and_in_the_encoder(tmp_path, monkeypatch):
    """The Scan of the expanded deformable sampling is counted through its body's nodes (not
    twice), which are named after the traced node and so belong to the encoder stage."""
    from mask2former.export import chunked_gather

    rows, gathers, corners, depth = 50, 3, 4, 2
    name = "/sem_seg_head/transformer/encoder/layers.0/self_attn/GatherWeightedSum"
    node = helper.make_node(chunked_gather.OP_TYPE, ["table", "index", "weights"], ["sums"], name=name,
                            domain=chunked_gather.DOMAIN, depth=depth, samples=gathers * corners, gathers=gathers)
    # the profiler feeds the image alone: the index and weights are constants of the graph
    inputs = [helper.make_node("ConstantOfShape", ["index_shape"], ["index"],
                               value=helper.make_tensor("zero", TensorProto.INT64, [1], [0])),
              helper.make_node("ConstantOfShape", ["weights_shape"], ["weights"],
                               value=helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5]))]
    graph = helper.make_graph(
        inputs + [node, helper.make_node("ReduceMax", ["image"], ["image_max"], keepdims=0)], "sampling",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("sums", TensorProto.FLOAT, [rows, 1, depth]),
         helper.make_tensor_value_info("image_max", TensorProto.FLOAT, [])],
        initializer=[numpy_helper.from_array(np.ones((10, corners * depth), np.float32), "table"),
                     numpy_helper.from_array(np.array([rows, gathers], np.int64), "index_shape"),
                     numpy_helper.from_array(np.array([rows, 1, gathers * corners], np.int64), "weights_shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(chunked_gather.DOMAIN, 1)])
    model.ir_version = 8
    monkeypatch.setattr(chunked_gather, "CHUNK_BYTES", 16 * 4 * gathers * corners * depth)  # 16 rows: 4 chunks
    assert chunked_gather.expand_gather_weighted_sums(model) == 1
    path = str(tmp_path / "sampling.onnx")
    onnx.save(model, path)
    tool = load_tool()
    nodes = tool.profile_run(path, 8, 8, threads=1)
    assert "Scan" not in {n["op"] for n in nodes}
    body = [n for n in nodes if "/chunked/body/" in n["name"]]
    assert {"Gather", "MatMul"} <= {n["op"] for n in body}
    assert {tool.stage_of(n["name"]) for n in body} == {"pixel decoder: deformable encoder"}
