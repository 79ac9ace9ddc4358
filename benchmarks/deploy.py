"""CPU time per image of the ONNX deployment (onnxruntime + the NumPy post-processing, as
demo/onnx_predictor.py runs them) against the PyTorch model with its own post-processing, in
the same process, on the same images, with the same number of threads.

The COCO panoptic R50 config (semantic + panoptic + instance outputs) is built with random
weights (seed 0, as benchmarks/inference.py: few queries pass the panoptic threshold, the
instance output keeps its top thing-class pairs), exported to ONNX in a temporary folder, and both are timed
on random uint8 images of each size (already at the test size: no resize; outputs at the same
size). Each figure is the median of ``--repeats`` images after one warm-up. The outputs of the
two are compared (semantic argmax, panoptic segments and ids, instance classes and scores).

    .venv/bin/python benchmarks/deploy.py [--repeats 3] [--threads 2] [--no-write]

Results go to the ``deploy`` section of benchmarks/RESULTS.md (unless ``--no-write``).
"""
import argparse
import datetime
import importlib.util
import json
import os
import sys
import tempfile
from typing import Dict, List

import numpy as np
import onnxruntime
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import REPO, checkout_config, cpu_model, load_average, median_time, write_section  # noqa: E402

CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
SIZES = [(512, 768), (800, 1333)]
PREDICTOR = os.path.join(REPO, "demo", "onnx_predictor.py")


def load_predictor_module():
    spec = importlib.util.spec_from_file_location("onnx_predictor", PREDICTOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_model(model, model_dir: str, input_format: str) -> None:
    from mask2former.export.exporter import export
    from mask2former.export.model import ExportableMaskFormer, deployment_info

    sample = torch.randint(0, 256, (1, 3, *SIZES[0])).float()
    export(ExportableMaskFormer(model), (sample - model.pixel_mean) / model.pixel_std, "onnx", model_dir)
    with open(os.path.join(model_dir, "export_info.json"), "w") as f:
        json.dump(deployment_info(model, input_format), f)


def compare(expected: Dict, got: Dict) -> str:
    """How far the ONNX outputs are from PyTorch's, in words."""
    agree = (got["sem_seg"].argmax(0) == expected["sem_seg"].argmax(0).numpy()).mean()
    e_ids, e_segments = expected["panoptic_seg"]
    same_segments = json.dumps(got["panoptic_seg"][1]) == json.dumps(e_segments)
    ids = (got["panoptic_seg"][0] == e_ids.numpy()).mean()
    instances = expected["instances"]
    order = torch.argsort(instances.scores, descending=True)
    classes = np.array_equal(got["instances"]["pred_classes"], instances.pred_classes[order].numpy())
    score_diff = np.abs(got["instances"]["scores"] - instances.scores[order].numpy()).max(initial=0.0)
    return (f"sem. argmax {100 * agree:.2f} %; {len(e_segments)} panoptic segments "
            f"{'same' if same_segments else 'DIFFERENT'}, ids {100 * ids:.2f} %; {len(instances)} instances, "
            f"classes {'same' if classes else 'DIFFERENT'}, scores within {score_diff:.1e}")


def run(repeats: int, threads: int) -> List[Dict]:
    from detectron2.modeling import build_model

    cfg = checkout_config({"repo": REPO, "threads": threads, "device": "cpu", "malloc": "keep"}, CONFIG)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    predictor_module = load_predictor_module()
    rows = []
    with tempfile.TemporaryDirectory() as model_dir, torch.no_grad():
        export_model(model, model_dir, cfg.INPUT.FORMAT)
        for height, width in SIZES:
            predictor = predictor_module.OnnxPredictor(model_dir, min(height, width), max(height, width), threads)
            image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
            inputs = [{"image": torch.from_numpy(image).permute(2, 0, 1).float(), "height": height, "width": width}]
            torch_ms = 1000 * median_time(lambda: model(inputs), repeats, "cpu")
            onnx_ms = 1000 * median_time(lambda: predictor(image), repeats, "cpu")
            feed = {predictor.session.get_inputs()[0].name: predictor.preprocess(image)}
            network_ms = 1000 * median_time(lambda: predictor.session.run(None, feed), repeats, "cpu")
            rows.append({"size": f"{height}x{width}", "torch_ms": torch_ms, "onnx_ms": onnx_ms, "network_ms": network_ms,
                         "outputs": compare(model(inputs)[0], predictor(image))})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = run(args.repeats, args.threads)
    command = "python benchmarks/deploy.py " + " ".join(sys.argv[1:])
    lines = [
        "## Deployment: onnxruntime + NumPy against PyTorch (CPU)",
        "",
        f"- date: {datetime.date.today()}; command: `{command.strip()}`",
        f"- CPU: {cpu_model()}, {args.threads} threads for both (torch.set_num_threads, onnxruntime "
        f"intra_op_num_threads); torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        "opset 17, CPUExecutionProvider, default graph optimisations",
        f"- `{CONFIG}`, random weights (seed 0), semantic + panoptic + instance "
        "outputs; one random uint8 image per size, at the test size (no resize)",
        "- PyTorch: `MaskFormer([{image, height, width}])` (normalisation, network, its block-wise "
        "post-processing); ONNX: `demo/onnx_predictor.py`'s `OnnxPredictor(image)` (normalisation, "
        "onnxruntime, `postprocess_numpy.postprocess`)",
        f"- each figure: median of {args.repeats} images after one warm-up, both in the same process, "
        f"one size after the other; load average 1/5/15 min at the end: {load_average()} "
        f"on {os.cpu_count()} cores",
        "",
        "| input | PyTorch (ms / image) | onnxruntime + NumPy (ms / image) | of which onnxruntime "
        "network (ms) | ONNX / PyTorch | outputs |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['size']} | {r['torch_ms']:.0f} | {r['onnx_ms']:.0f} | {r['network_ms']:.0f} "
              f"| {r['onnx_ms'] / r['torch_ms']:.2f} "
              f"| {r['outputs']} |" for r in rows]
    print("\n".join(lines))
    if not args.no_write:
        write_section("deploy", "\n".join(lines))


if __name__ == "__main__":
    main()
