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
