"""CPU time per image of the ONNX deployment (onnxruntime + the NumPy post-processing, as
demo/onnx_predictor.py runs them) against the PyTorch model with its own post-processing, in
the same process, on the same images, with the same number of threads.

For each size, the COCO panoptic R50 config (semantic + panoptic + instance outputs) is
built with random weights (seed 0, as benchmarks/inference.py), its two output heads re-scaled
on that size's image (:func:`diversify_heads`), exported to ONNX in a temporary folder, and
both are timed on that random uint8 image (already at the test size: no resize; outputs at the
same size). With the plain random weights every query's decoder output is nearly the same, so
all queries predict one stuff class and nearly the same mask: no panoptic segment passes the
overlap threshold and no instance is kept; with the heads re-scaled, a few queries are
confident, of several classes, with different masks, so that the comparison covers all three
outputs. Each figure is the median of ``--repeats`` runs after one warm-up, PyTorch and ONNX
taking turns. The outputs of the two are compared
(semantic argmax, panoptic segments and ids, instance classes and scores).

    .venv/bin/python benchmarks/deploy.py [--repeats 3] [--threads 2] [--sizes 512x768 800x1333] [--no-write]

Results go to the ``deploy`` section of benchmarks/RESULTS.md (unless ``--no-write``).
"""
import argparse
import datetime
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np
import onnxruntime
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import REPO, checkout_config, cpu_model, load_average, write_section  # noqa: E402

CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
SIZES = [(512, 768), (800, 1333)]
PREDICTOR = os.path.join(REPO, "demo", "onnx_predictor.py")
# standard deviations of the class and mask logits that diversify_heads sets
CLASS_LOGIT_STD, MASK_LOGIT_STD = 8.0, 8.0
# queries whose best class diversify_heads leaves above "no object" on its calibration image
CONFIDENT_QUERIES = 8


def load_predictor_module():
    spec = importlib.util.spec_from_file_location("onnx_predictor", PREDICTOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_model(model, cfg, model_dir: str) -> None:
    from mask2former.export.exporter import export, write_deployment_info
    from mask2former.export.model import ExportableMaskFormer

    sample = torch.randint(0, 256, (1, 3, *SIZES[0])).float()
    export(ExportableMaskFormer(model), (sample - model.pixel_mean) / model.pixel_std, "onnx", model_dir)
    write_deployment_info(model, cfg, model_dir)


def _layer_inputs(model, image: torch.Tensor, layers) -> Dict:
    """The arguments each of ``layers`` got in its last call of a forward pass on ``image``."""
    from mask2former.export.model import ExportableMaskFormer

    seen = {}
    hooks = [layer.register_forward_pre_hook(lambda module, args: seen.__setitem__(module, args)) for layer in layers]
    ExportableMaskFormer(model)((image[None] - model.pixel_mean) / model.pixel_std)  # padded as the model pads
    for hook in hooks:
        hook.remove()
    return seen


def diversify_heads(model, image: torch.Tensor) -> None:
    """
    Re-scales the random model's mask head (its last layer) and then its class head, each
    from a forward pass on ``image`` (C, H, W) (the masks steer the decoder's attention, so the
    class head's inputs are taken after the mask head is set): the mean direction of the mask
    features is removed from the mask embeddings and the direction that all queries' decoder
    outputs share from the class head's weights, both are scaled to ``MASK_LOGIT_STD`` and
    ``CLASS_LOGIT_STD``, so that the masks are about half on and the class logits follow each
    query's own features; the "no object" logit is raised so that about
    ``CONFIDENT_QUERIES`` queries are kept.
    """
    predictor = model.sem_seg_head.predictor
    class_head, mask_head = predictor.class_embed, predictor.mask_embed.layers[-1]
    seen = _layer_inputs(model, image, (mask_head, predictor))
    mask_features = seen[predictor][1]  # (B, C, H, W)
    shared = torch.nn.functional.normalize(mask_features.mean((0, 2, 3)), dim=0)
    mask_head.weight -= shared[:, None] * (shared @ mask_head.weight)
    mask_head.bias -= shared * (shared @ mask_head.bias)
    scale = MASK_LOGIT_STD / torch.einsum("qc,bchw->bqhw", mask_head(seen[mask_head][0].flatten(0, -2)), mask_features).std()
    mask_head.weight *= scale
    mask_head.bias *= scale

    queries = _layer_inputs(model, image, (class_head,))[class_head][0].flatten(0, -2)  # (B*Q, C)
    shared = torch.nn.functional.normalize(queries.mean(0), dim=0)
    class_head.weight -= (class_head.weight @ shared)[:, None] * shared
    class_head.bias.zero_()
    class_head.weight *= CLASS_LOGIT_STD / class_head(queries).std()
    logits = class_head(queries)
    margins = logits[:, :-1].max(1).values - logits[:, -1]
    class_head.bias[-1] = margins.topk(CONFIDENT_QUERIES + 1).values[-1]


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


def in_float_mode(flush_denormals: bool, fn: Callable, *args) -> Callable[[], object]:
    """``fn(*args)`` with this thread's denormal mode as each path has it in its own process: the
    ONNX predictor's session flushes denormals to zero on the thread that creates it (see
    OnnxPredictor), PyTorch keeps them by default. The mode is per thread; the other threads of
    each runtime keep their own (onnxruntime's flush, PyTorch's do not)."""
    def call():
        torch.set_flush_denormal(flush_denormals)
        return fn(*args)
    return call


def alternating_median_ms(fns: List[Callable[[], object]], repeats: int) -> List[float]:
    """Median milliseconds of ``repeats`` calls of each of ``fns`` after one warm-up call each,
    the functions taking turns: on a shared machine, a busy spell slows all of them alike."""
    times: List[List[float]] = [[] for _ in fns]
    for repeat in range(repeats + 1):
        for fn, fn_times in zip(fns, times):
            start = time.perf_counter()
            fn()
            if repeat:  # the first round is the warm-up
                fn_times.append(1000 * (time.perf_counter() - start))
    return [statistics.median(t) for t in times]


def run(repeats: int, threads: int, sizes=SIZES) -> List[Dict]:
    from detectron2.modeling import build_model

    cfg = checkout_config({"repo": REPO, "threads": threads, "device": "cpu", "malloc": "keep"}, CONFIG)
    predictor_module = load_predictor_module()
    rows = []
    for height, width in sizes:
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)  # BGR
        # in the model's channel order, as detectron2's DefaultPredictor gives it
        model_image = np.ascontiguousarray(image[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else image)
        inputs = [{"image": torch.from_numpy(model_image).permute(2, 0, 1).float(), "height": height, "width": width}]
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        with tempfile.TemporaryDirectory() as model_dir, torch.no_grad():
            # the heads set on this image, so that its outputs have segments; exported after
            diversify_heads(model, inputs[0]["image"])
            export_model(model, cfg, model_dir)
            predictor = predictor_module.OnnxPredictor(model_dir, min(height, width), max(height, width), threads)
            feed = {predictor.session.get_inputs()[0].name: predictor.preprocess(image)}
            torch_ms, onnx_ms, network_ms = alternating_median_ms(
                [in_float_mode(False, model, inputs), in_float_mode(True, predictor, image),
                 in_float_mode(True, predictor.session.run, None, feed)], repeats)
            rows.append({"size": f"{height}x{width}", "torch_ms": torch_ms, "onnx_ms": onnx_ms, "network_ms": network_ms,
                         "outputs": compare(in_float_mode(False, model, inputs)()[0], in_float_mode(True, predictor, image)())})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=[f"{h}x{w}" for h, w in SIZES], metavar="HxW")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = run(args.repeats, args.threads, [tuple(int(v) for v in size.split("x")) for size in args.sizes])
    command = "python benchmarks/deploy.py " + " ".join(sys.argv[1:])
    lines = [
        "## Deployment: onnxruntime + NumPy against PyTorch (CPU)",
        "",
        f"- date: {datetime.date.today()}; command: `{command.strip()}`",
        f"- CPU: {cpu_model()}, {args.threads} threads for both (torch.set_num_threads, onnxruntime "
        f"intra_op_num_threads); torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        "opset 17, CPUExecutionProvider, all graph optimisations, sequential execution; NumPy's "
        "OpenBLAS on at most 2 threads (its build's maximum); glibc keeps freed memory for reuse in the process "
        "(`--malloc keep` of the other benchmarks; demo/demo.py and the predictor's command line do the same)",
        f"- `{CONFIG}`, random weights (seed 0; class and mask heads re-scaled by `diversify_heads` so that "
        "queries are confident, of several classes, with different masks), semantic + panoptic + instance "
        "outputs; one random uint8 image per size, at the test size (no resize)",
        "- PyTorch: `MaskFormer([{image, height, width}])` (normalisation, network, its block-wise "
        "post-processing); ONNX: `demo/onnx_predictor.py`'s `OnnxPredictor(image)` (normalisation, "
        "onnxruntime, `postprocess_numpy.postprocess` with its dense step in onnxruntime from the export's "
        "`postprocess.onnx`); the calling thread flushes denormals to zero for ONNX (as the predictor sets "
        "it) and not for PyTorch (its default)",
        f"- each figure: median of {args.repeats} runs after one warm-up, both in the same process, "
        "PyTorch, ONNX and the network alone taking turns, one size after the other; load average "
        f"1/5/15 min at the end: {load_average()} "
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
