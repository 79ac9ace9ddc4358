"""Time and memory of the training losses alone: Hungarian matcher + point-sampled criterion.

Realistic inputs of COCO panoptic training at 384x384, batch 2: Q = 100 queries, 133 classes,
mask logits at 96x96, 10 decoder outputs (the last one and 9 auxiliary ones, each its own leaf
tensor), 3-8 rectangle targets per image at 384x384, and the config's loss settings (12544
points, oversampling 3, importance 0.75, weights 2 / 5 / 5). One step is the criterion's forward
and the backward of the weighted sum of its losses.

    .venv/bin/python benchmarks/criterion.py --baseline b209547

``--baseline REV`` exports that revision (``git archive``) into a temporary directory, with this
checkout's compiled ``mask2former/_C*.so``, and measures it in the same run, the two checkouts
alternating in fresh worker processes. Each worker also saves its losses, its gradients w.r.t.
every output's "pred_logits" and "pred_masks" and the matching of every output, all under the
same seeds; the run fails unless the two checkouts agree (gradients within float rounding,
matchings exactly). Memory: the peak of the bytes held at once by the tensors torch ops create during one step
(tracked with a dispatch mode, so it does not depend on malloc's caching), and the growth of
the worker's peak RSS. Results go to the ``criterion`` section of benchmarks/RESULTS.md
(unless ``--no-write``).
"""
import argparse
import contextlib
import datetime
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, MASK_SIZE, BATCH, QUERIES, CLASSES, OUTPUTS = 384, 96, 2, 100, 133, 10
WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}


def synthetic_inputs(seed: int):
    """(outputs, targets) of one step: leaf tensors requiring grad, and 3-8 rectangles per image."""
    import torch

    from training import synthetic_batch  # this checkout's benchmarks/ (the script's directory)

    g = torch.Generator().manual_seed(seed)

    def output():
        return {
            "pred_logits": torch.randn(BATCH, QUERIES, CLASSES + 1, generator=g).requires_grad_(),
            "pred_masks": (torch.randn(BATCH, QUERIES, MASK_SIZE, MASK_SIZE, generator=g) * 3).requires_grad_(),
        }

    outputs = output()
    outputs["aux_outputs"] = [output() for _ in range(OUTPUTS - 1)]
    # the targets of benchmarks/training.py's synthetic training batches
    targets = [
        {"labels": x["instances"].gt_classes, "masks": x["instances"].gt_masks}
        for x in synthetic_batch(BATCH, SIZE, CLASSES, seed)
    ]
    return outputs, targets


def _leaves(outputs) -> List:
    return [outputs] + list(outputs["aux_outputs"])


def measure(spec: Dict) -> Dict:
    from common import PeakTensorMemory, set_malloc

    set_malloc(spec["malloc"])
    sys.path.insert(0, spec["repo"])
    import torch

    torch.set_num_threads(spec["threads"])
    import mask2former.modeling.criterion as criterion_module
    from mask2former.modeling.criterion import SetCriterion
    from mask2former.modeling.matcher import HungarianMatcher

    if not criterion_module.__file__.startswith(os.path.abspath(spec["repo"])):
        raise RuntimeError(f"imported {criterion_module.__file__}, not the one of {spec['repo']}")
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=12544)
    criterion = SetCriterion(CLASSES, matcher, WEIGHTS, eos_coef=0.1, losses=["labels", "masks"],
                             num_points=12544, oversample_ratio=3.0, importance_sample_ratio=0.75)

    def step(seed: int, memory=None):
        outputs, targets = synthetic_inputs(seed)
        torch.manual_seed(seed)
        with memory or contextlib.nullcontext():
            start, cpu_start = time.perf_counter(), time.process_time()
            losses = criterion(outputs, targets)
            if memory is not None:
                forward = {"forward_peak_mb": memory.peak / 2**20, "saved_mb": memory.held / 2**20}
            total = sum(WEIGHTS[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * v for k, v in losses.items())
            total.backward()
            times = (time.perf_counter() - start, time.process_time() - cpu_start)
        if memory is not None:
            return {**forward, "step_peak_mb": memory.peak / 2**20}
        return times, outputs, targets, losses

    _, outputs, targets, losses = step(0)
    torch.manual_seed(0)
    matchings = [matcher({k: o[k].detach() for k in ("pred_logits", "pred_masks")}, targets)
                 for o in _leaves(outputs)]
    torch.save({
        "losses": {k: v.detach() for k, v in losses.items()},
        "grads": [{k: o[k].grad for k in ("pred_logits", "pred_masks")} for o in _leaves(outputs)],
        "matchings": matchings,
    }, spec["save"])
    del outputs, targets, losses
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = [step(seed)[0] for seed in range(1, spec["iters"] + 1)]
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024

    memory = step(spec["iters"] + 1, PeakTensorMemory())
    return {"sec": statistics.median(t[0] for t in times), "cpu_sec": statistics.median(t[1] for t in times),
            **memory, "rss_growth_mb": rss_growth}


def compare(saved_this: str, saved_base: str) -> Dict:
    """Largest differences of the losses and gradients (relative to the largest magnitude) and
    whether every matching is identical."""
    import torch

    a, b = torch.load(saved_this), torch.load(saved_base)
    if set(a["losses"]) != set(b["losses"]):
        raise AssertionError(f"different loss names: {sorted(a['losses'])} vs {sorted(b['losses'])}")

    def rel(x, y):
        return float((x - y).abs().max() / y.abs().max().clamp(min=1e-30))

    loss_diff = max(rel(a["losses"][k], b["losses"][k]) for k in b["losses"])
    grad_diff = max(rel(ga[k], gb[k]) for ga, gb in zip(a["grads"], b["grads"]) for k in gb)
    same_matching = all(
        torch.equal(x, y)
        for ma, mb in zip(a["matchings"], b["matchings"]) for pa, pb in zip(ma, mb) for x, y in zip(pa, pb)
    )
    return {"loss_rel_diff": loss_diff, "grad_rel_diff": grad_diff, "same_matching": same_matching}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help="git revision to measure against (e.g. b209547)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating worker runs per checkout")
    parser.add_argument("--iters", type=int, default=3, help="timed steps per worker (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    if args.worker:
        return print(json.dumps(measure(json.loads(args.worker))))
    import torch

    from common import MALLOC_MODES, cpu_model, load_average, revision_checkout, run_worker, write_section

    tmp = tempfile.mkdtemp(prefix="criterion_bench_")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        checkouts = {"this": REPO}
        if args.baseline:
            checkouts["baseline"] = stack.enter_context(revision_checkout(args.baseline))
        results: Dict[str, List[Dict]] = {name: [] for name in checkouts}
        for r in range(args.rounds):
            order = list(checkouts) if r % 2 == 0 else list(checkouts)[::-1]
            for name in order:
                spec = {"repo": checkouts[name], "threads": args.threads, "iters": args.iters,
                        "malloc": args.malloc, "save": os.path.join(tmp, f"{name}.pt")}
                results[name].append(run_worker(__file__, spec, cwd=REPO))
                print(name, results[name][-1], flush=True)
        summary = {name: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for name, rs in results.items()}
        check = compare(os.path.join(tmp, "this.pt"), os.path.join(tmp, "baseline.pt")) if args.baseline else None

    table = format_table(summary, args.baseline)
    print(table)
    if check is not None:
        print(check)
        if not check["same_matching"] or check["loss_rel_diff"] > 1e-5 or check["grad_rel_diff"] > 1e-4:
            raise SystemExit(f"the checkouts disagree: {check}")
    if args.no_write:
        return
    command = "python benchmarks/criterion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    notes = [
        f"date: {datetime.date.today().isoformat()}; command: `{command.strip()}`",
        f"CPU: {cpu_model()}, {args.threads} threads; torch {torch.__version__}; load average 1/5/15 min "
        f"at the end: {load_average()} on {os.cpu_count()} cores",
        f"one step: forward and backward of the losses of {OUTPUTS} decoder outputs, batch {BATCH}, "
        f"{QUERIES} queries, {CLASSES} classes, mask logits {MASK_SIZE}x{MASK_SIZE}, 3-8 targets of "
        f"{SIZE}x{SIZE} per image, 12544 points; median over {args.rounds} alternating workers of the "
        f"median of {args.iters} steps",
        "CPU s: the worker's processor time (all threads), less sensitive than wall time to other load "
        "on the machine",
        "memory: bytes held by the tensors that torch ops create (tracked with a dispatch mode; the "
        "gradients of the 10 outputs' masks alone are 74 MB): most at once during the forward, still "
        "held at its end (kept for the backward), most at once during the step; peak RSS growth: the "
        "worker's, over the timed steps",
        f"allocator (`--malloc {args.malloc}`): {MALLOC_MODES[args.malloc]}",
    ]
    if check is not None:
        notes.append(
            f"same seeds, both checkouts: losses equal to {check['loss_rel_diff']:.1e}, gradients "
            f"(pred_logits, pred_masks of every output) to {check['grad_rel_diff']:.1e} of their largest "
            f"magnitude, matchings identical: {check['same_matching']}"
        )
    section = "## Training losses (matcher + criterion)\n\n" + "".join(f"- {n}\n" for n in notes)
    write_section("criterion", section + "\n" + table)
    print("\nwrote the criterion section of benchmarks/RESULTS.md")


def format_table(summary: Dict[str, Dict], baseline: Optional[str]) -> str:
    """Markdown table of the medians of each checkout, and their ratios."""
    columns = [("s / step", "sec", 3), ("CPU s / step", "cpu_sec", 3), ("forward peak (MB)", "forward_peak_mb", 1),
               ("kept for backward (MB)", "saved_mb", 1), ("step peak (MB)", "step_peak_mb", 1),
               ("peak RSS growth (MB)", "rss_growth_mb", 1)]
    rows = ["| checkout | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, s in summary.items():
        label = f"baseline `{baseline}`" if name == "baseline" else "this"
        rows.append(f"| {label} | " + " | ".join(f"{s[key]:.{digits}f}" for _, key, digits in columns) + " |")
    if baseline:
        ratios = (summary["this"][key] / max(summary["baseline"][key], 1e-9) for _, key, _ in columns)
        rows.append("| this / baseline | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
