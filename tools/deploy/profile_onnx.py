#!/usr/bin/env python
"""
Where an exported model's time goes in onnxruntime: the operator time of one run (after one
warm-up) from onnxruntime's own profiler, summed by operator type, by stage of the model
(backbone, deformable encoder, rest of the pixel decoder, transformer decoder) and by node.
Needs only onnxruntime and NumPy. Control-flow nodes (the ``Scan`` of the chunked deformable
sampling) are counted through the nodes of their subgraphs, not themselves.

    python tools/deploy/profile_onnx.py OUTPUT_DIR/model.onnx --size 800 1344 [--threads 2] [--top 25]

The input is random (the network's time does not depend on the values); height and width
should be multiples of the model's size divisibility (32), as the predictor pads them.
"""
import argparse
import collections
import json
import os
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
import onnxruntime

# node-name prefixes (the traced module paths) of the model's stages, first match wins
STAGES = (
    ("backbone", "/backbone/"),
    ("pixel decoder: deformable encoder", "/sem_seg_head/pixel_decoder/transformer/encoder/"),
    ("pixel decoder: deformable encoder", "/sem_seg_head/transformer/encoder/"),
    ("transformer decoder", "/sem_seg_head/predictor/"),
    ("pixel decoder: rest", "/sem_seg_head/"),
)


# left out of the sums: their time is their subgraphs' (reported node by node) and a little more
CONTROL_FLOW = ("Scan", "Loop", "If")


def stage_of(node_name: str) -> str:
    for stage, prefix in STAGES:
        if prefix in node_name:
            return stage
    return "other (layout changes, graph inputs)"


def profile_run(path: str, height: int, width: int, threads: int) -> List[Dict]:
    """The profiler's node events (name, op type, microseconds) of one run after a warm-up."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    # as demo/onnx_predictor.py runs the network
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
            (1, 3, height, width)).astype(np.float32)}
        runs = 2
        for _ in range(runs):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    last_run = nodes[len(nodes) - len(nodes) // runs:]
    # a control-flow node's time is that of its subgraph's nodes, which have events of their own
    return [{"name": e["name"][: -len("_kernel_time")], "op": e["args"]["op_name"], "us": e["dur"]}
            for e in last_run if e["args"]["op_name"] not in CONTROL_FLOW]


def totals(nodes: Sequence[Dict], key) -> List[Tuple[str, float]]:
    sums = collections.Counter()
    for node in nodes:
        sums[key(node)] += node["us"]
    return sums.most_common()


def report(nodes: Sequence[Dict], top: int) -> str:
    total = sum(n["us"] for n in nodes)
    lines = [f"operator time: {total / 1e3:.0f} ms"]
    for title, key, limit in (("by stage", lambda n: stage_of(n["name"]), None),
                              ("by operator type", lambda n: n["op"], top),
                              ("by node", lambda n: f"{n['name']} ({n['op']})", top)):
        lines += ["", title]
        lines += [f"{us / 1e3:9.1f} ms {100 * us / total:5.1f} %  {name}" for name, us in totals(nodes, key)[:limit]]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the exported ONNX file")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1344), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=25, help="operator types and nodes listed")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.model):
        parser.error(f"no ONNX file at {args.model}")
    print(report(profile_run(args.model, *args.size, args.threads), args.top))


if __name__ == "__main__":
    main()
