"""Throughput of the ``train_net.py --eval-only`` loop on the synthetic validation split.

Builds the model of a synthetic config (random weights, seed 0, or ``--weights``), then runs the
evaluation as ``Trainer.test`` does (``Trainer.build_test_loader``, ``build_evaluator``, one
loop of loader -> model -> ``evaluator.process``, then ``evaluator.evaluate``) under two sets of
settings in the same process, alternating ``--rounds`` times:

- ``plain``: the starting point's settings, one image per batch, no loader workers, the
  evaluators' work in the main process (``TEST.IMS_PER_BATCH 1``, ``DATALOADER.NUM_WORKERS 0``,
  ``TEST.EVALUATOR_THREADS 0``);
- ``parallel``: ``--workers`` loader workers and ``--evaluator-threads`` threads for the
  evaluators' per-image work, one image per batch: the same metrics as ``plain``, exactly;
- ``labels``: ``parallel`` with the semantic output as labels
  (``MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT labels``: no (K, H, W) scores are written, and the
  evaluator has no argmax left to take): the same metrics as ``plain``, exactly;
- ``batched``: ``parallel`` with ``--batch`` images per batch: the metrics of ``plain`` up to
  float rounding (batched matrix products round differently).

It prints images / s and the time per image spent waiting for data, in the model (of which
post-processing, ``MaskFormer.inference``), in ``evaluator.process`` and in
``evaluator.evaluate``, checks that ``parallel`` and ``labels`` give the metrics of ``plain`` and
prints how far ``batched``'s are from them.

    .venv/bin/python benchmarks/evaluation.py                 # configs/synthetic/panoptic.yaml
    .venv/bin/python benchmarks/evaluation.py --config configs/synthetic/semantic.yaml --no-write
"""
import argparse
import dataclasses
import datetime
import json
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

PARTS = ["data", "model", "postprocess", "process", "evaluate"]


def settings_opts(batch: int, workers: int, threads: int, semantic_output: str = "scores") -> List[str]:
    return [
        "TEST.IMS_PER_BATCH", str(batch),
        "DATALOADER.NUM_WORKERS", str(workers),
        "TEST.EVALUATOR_THREADS", str(threads),
        "MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT", semantic_output,
    ]


def build_cfg(config: str, opts: List[str]):
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    from mask2former import add_maskformer2_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def timed_evaluation(cfg, model, dataset: str, output_dir: str) -> Dict:
    """One evaluation of ``dataset`` as ``Trainer.test`` runs it, with the time of each part;
    ``model`` produces the semantic output in the form ``cfg`` asks for during the run."""
    from detectron2.evaluation import DatasetEvaluators

    from mask2former.evaluation import build_evaluator
    from train_net import Trainer

    times = dict.fromkeys(PARTS, 0.0)
    inference = model.inference

    def timed_inference(*args, **kwargs):
        t = time.perf_counter()
        out = inference(*args, **kwargs)
        times["postprocess"] += time.perf_counter() - t
        return out

    model.inference = timed_inference
    settings = model.postprocessor.settings
    model.postprocessor.settings = dataclasses.replace(
        settings, semantic_output=cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT
    )
    loader = Trainer.build_test_loader(cfg, dataset)
    evaluator = build_evaluator(cfg, dataset, output_dir)
    if not isinstance(evaluator, DatasetEvaluators):
        evaluator = DatasetEvaluators([evaluator])
    evaluator.reset()
    num_images = 0
    start = time.perf_counter()
    try:
        with torch.no_grad():
            t = time.perf_counter()
            for inputs in loader:
                times["data"] += time.perf_counter() - t
                t = time.perf_counter()
                outputs = model(inputs)
                times["model"] += time.perf_counter() - t
                t = time.perf_counter()
                evaluator.process(inputs, outputs)
                times["process"] += time.perf_counter() - t
                num_images += len(inputs)
                t = time.perf_counter()
        t = time.perf_counter()
        metrics = evaluator.evaluate()
        times["evaluate"] = time.perf_counter() - t
    finally:
        del model.inference
        model.postprocessor.settings = settings
    times["total"] = time.perf_counter() - start
    return {"times": times, "images": num_images, "metrics": metrics}


def max_difference(a: Dict, b: Dict) -> float:
    """The largest absolute difference between two evaluations' metrics (NaN where both are)."""
    diffs = [
        abs(a[task][k] - b[task][k])
        for task in a
        for k in a[task]
        if not (math.isnan(a[task][k]) and math.isnan(b[task][k]))
    ]
    return max(diffs, default=0.0)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/synthetic/panoptic.yaml")
    parser.add_argument("--weights", default="", help="MODEL.WEIGHTS (default: random, seed 0)")
    parser.add_argument("--root", help="datasets root holding synthetic/ (default: a temporary one)")
    parser.add_argument("--num-val", type=int, default=50, help="validation images to generate")
    parser.add_argument("--batch", type=int, default=4, help="TEST.IMS_PER_BATCH of the batched settings")
    parser.add_argument("--workers", type=int, default=1, help="DATALOADER.NUM_WORKERS (parallel, batched)")
    parser.add_argument("--evaluator-threads", type=int, default=2,
                        help="TEST.EVALUATOR_THREADS (parallel, batched)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--rounds", type=int, default=2, help="evaluations per settings (fastest kept)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    from detectron2.modeling import build_model

    import mask2former  # noqa: F401
    from mask2former.checkpoint import load_model_weights
    from mask2former.data.synthetic import ensure_synthetic_dataset, register_all_synthetic
    from common import cpu_model, load_average, write_section
    from train_net import Trainer

    torch.set_num_threads(args.threads)
    # generated images and the evaluations' outputs; removed when the script ends
    scratch = tempfile.TemporaryDirectory(prefix="eval_bench_")
    root = args.root or scratch.name
    ensure_synthetic_dataset(root, num_train=1, num_val=args.num_val)
    register_all_synthetic(root, prefix="bench")
    cfg = build_cfg(args.config, [])
    dataset = cfg.DATASETS.TEST[0].replace("synthetic", "bench", 1)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if args.weights:
        load_model_weights(model, args.weights)
    settings = {
        "plain": settings_opts(1, 0, 0),
        "parallel": settings_opts(1, args.workers, args.evaluator_threads),
        "labels": settings_opts(1, args.workers, args.evaluator_threads, "labels"),
        "batched": settings_opts(args.batch, args.workers, args.evaluator_threads),
    }
    # the model's first call (allocations, kernel set-up) would count against the first settings
    with torch.no_grad():
        model([next(iter(Trainer.build_test_loader(cfg, dataset)))[0]])
    best: Dict[str, Dict] = {}
    for _ in range(args.rounds):
        for name, opts in settings.items():
            run = timed_evaluation(build_cfg(args.config, opts), model, dataset, tempfile.mkdtemp(dir=scratch.name))
            print(name, f"{run['images'] / run['times']['total']:.2f} images/s", flush=True)
            if name not in best or run["times"]["total"] < best[name]["times"]["total"]:
                best[name] = run
    exact = ("parallel", "labels")
    same = {name: json.dumps(best["plain"]["metrics"], sort_keys=True) == json.dumps(best[name]["metrics"], sort_keys=True) for name in exact}
    batched_diff = max_difference(best["plain"]["metrics"], best["batched"]["metrics"])

    head = ["settings", "batch", "loader workers", "evaluator threads", "semantic output", "images / s"]
    head += [f"{p} (ms / image)" for p in PARTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, opts in settings.items():
        run, n = best[name], best[name]["images"]
        cells = [name, *opts[1::2], f"{n / run['times']['total']:.2f}"]
        cells += [f"{run['times'][p] / n * 1e3:.1f}" for p in PARTS]
        lines.append("| " + " | ".join(cells) + " |")
    speedup = {name: best["plain"]["times"]["total"] / best[name]["times"]["total"] for name in settings if name != "plain"}
    table = "\n".join(lines)
    metrics = {
        task: {k: round(v, 4) for k, v in m.items() if k in ("PQ", "AP", "mIoU")}
        for task, m in best["plain"]["metrics"].items()
    }
    print("\n" + table)
    summary = (
        "throughput / plain's: " + ", ".join(f"{name} {x:.2f}x" for name, x in speedup.items()) + "; "
        + "; ".join(f"{name}'s metrics equal plain's: {same[name]}" for name in exact)
        + f"; batched's differ by at most {batched_diff:.2g} "
        f"(metrics in %); plain: {metrics}"
    )
    print("\n" + summary)
    notes = [
        "date: " + datetime.date.today().isoformat() + "; command: `python benchmarks/evaluation.py "
        + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        f"CPU: {cpu_model()}, {args.threads} torch threads; torch {torch.__version__}; load average "
        f"1/5/15 min at the end: {load_average()} on {os.cpu_count()} cores",
        f"`{args.config}`, " + (f"weights `{args.weights}`" if args.weights else "random weights (seed 0)")
        + f", {best['plain']['images']} generated validation images (128x128); the settings in "
        f"one process, alternating, the fastest of {args.rounds} evaluations each, after one "
        "warm-up call of the model",
        "parts per image: data = waiting for the loader, model = `model(inputs)` (of which "
        "postprocess = `MaskFormer.inference`), process = `evaluator.process` (with evaluator "
        "threads: the main thread's wait for them), evaluate = `evaluator.evaluate` (PQ, AP, mIoU) "
        "spread over the images",
        summary,
    ]
    title = "## Evaluation throughput (`train_net.py --eval-only` loop, synthetic validation split)"
    text = "\n".join([title, ""] + ["- " + note for note in notes] + ["", table])
    if not args.no_write:
        write_section("evaluation", text)
        print("wrote the 'evaluation' section of benchmarks/RESULTS.md")
    if not all(same.values()):
        sys.exit(f"settings gave other metrics than plain's: {[name for name in exact if not same[name]]}")


if __name__ == "__main__":
    main()
