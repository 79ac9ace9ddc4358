"""Training speed and memory of a whole Mask2Former model, optionally against a git revision.

A fresh worker process builds the model and optimizer of a config (random weights, seed 0, the
config's solver: AdamW, gradient clipping), and runs training iterations on synthetic batches of
``--size`` x ``--size`` images (the LSJ crop size; the reference trains COCO at 1024) with a few
random rectangle instances of random classes each. It reports seconds per iteration (median after
two warm-up iterations) and peak memory per image: peak allocated CUDA memory on a GPU; on the
CPU the growth of the process's peak RSS over what it held before the first iteration, and
the peak of the tensors themselves in one more step (allocator-independent, like CUDA's figure).
Each checkout's step runs in the order of its own ``train_net.py`` trainer (see
``trainer_zeroes_grad_first``): this one frees the gradients before the forward.

    .venv/bin/python benchmarks/training.py                                   # CPU, 384x384, batch 2
    .venv/bin/python benchmarks/training.py --baseline b209547 --rounds 3     # before / after
    .venv/bin/python benchmarks/training.py --baseline b209547 --opts MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING True
    .venv/bin/python benchmarks/training.py --device cuda --size 1024 --batch 2 [--amp]

With ``--baseline REV`` the same measurement also runs on a temporary checkout of git revision
REV (``git archive``, this checkout's compiled op copied in), alternating with this checkout
``--rounds`` times in fresh processes; it prints the time and peak-memory ratios (this / REV,
medians over the rounds) and the largest difference between the two checkouts' loss terms over
every iteration (same seed, same batches: equal up to float rounding when the mathematics and the
random draws are the same).

The losses are Mask2Former's point-sampled ones (K = 12544 points of the matched masks only), so
no full-resolution mask of every query is ever materialised; the memory figures show it.
Results go to the ``training`` section of benchmarks/RESULTS.md (unless ``--no-write``).
"""
import argparse
import datetime
import json
import math
import os
import resource
import statistics
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"


def synthetic_batch(batch: int, size: int, num_classes: int, seed: int) -> List[Dict]:
    """Training inputs in detectron2's format: (3, S, S) uint8 images with 3-8 rectangle
    instances each (gt_classes (N,), gt_masks (N, S, S) bool)."""
    import torch
    from detectron2.structures import Instances

    g = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(batch):
        n = int(torch.randint(3, 9, (1,), generator=g))
        masks = torch.zeros(n, size, size, dtype=torch.bool)
        for i in range(n):
            y0, x0 = torch.randint(0, size * 3 // 4, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            masks[i, y0 : y0 + h, x0 : x0 + w] = True
        inst = Instances((size, size))
        inst.gt_classes = torch.randint(0, num_classes, (n,), generator=g)
        inst.gt_masks = masks
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
        inputs.append({"image": image, "instances": inst, "height": size, "width": size})
    return inputs


def trainer_zeroes_grad_first() -> bool:
    """
    In a worker: whether the imported checkout's ``train_net.py`` trainer frees the gradients
    before the forward (``ReliableTrainer.ZERO_GRAD_BEFORE_FORWARD``), so that the step runs as
    that checkout trains. Revisions without the attribute, such as b209547, are run with
    detectron2's ``SimpleTrainer`` order (forward, then ``zero_grad``, backward, step).
    """
    try:
        from mask2former.engine.trainer import ReliableTrainer
    except ImportError:
        return False
    return bool(getattr(ReliableTrainer, "ZERO_GRAD_BEFORE_FORWARD", False))


def measure(spec: Dict) -> Dict:
    from common import PeakTensorMemory, checkout_config  # this checkout's benchmarks/ (the script's directory)

    cfg = checkout_config(spec, spec["config"], spec.get("opts", []))
    import torch
    from detectron2.modeling import build_model

    from mask2former.solver import build_optimizer

    device = spec["device"]
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    batches = [
        synthetic_batch(spec["batch"], spec["size"], num_classes, seed) for seed in range(spec["iters"] + 2)
    ]
    scaler = torch.amp.GradScaler("cuda", enabled=spec["amp"])
    zero_grad_first = trainer_zeroes_grad_first()

    def step(inputs):
        if zero_grad_first:
            optimizer.zero_grad()
        with torch.autocast("cuda", enabled=spec["amp"]) if device.startswith("cuda") else _null():
            losses = model(inputs)
        loss = sum(losses.values())
        if not zero_grad_first:
            optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return {k: float(v) for k, v in losses.items()}

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times, losses = [], []
    for i, inputs in enumerate(batches):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses.append(step(inputs))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        tensor_peak = float("nan")
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        # one more step, untimed (the tracking slows every op): the most bytes that tensors
        # created in the step hold at once, whatever the allocator keeps besides
        with PeakTensorMemory() as tensors:
            step(batches[2])
        tensor_peak = tensors.peak / 2**20
    # deterministic for a checkout: counted where the report asks (its first round), not
    # in gpu_check.py's timed training runs
    gflop = step_gflop(step, batches[2]) if spec.get("count_flops") else None
    totals = [sum(terms.values()) for terms in losses]
    return {
        "sec_per_iter": statistics.median(times),
        "times": times,
        "peak_mb_per_image": peak / spec["batch"],
        "tensor_peak_mb_per_image": tensor_peak / spec["batch"],
        "losses": losses,
        "final_loss": totals[-1],
        "finite": all(math.isfinite(t) for t in totals),
        "zero_grad_first": zero_grad_first,
        "gflop_per_iter": gflop,
        "matmul_gflops": matmul_rate(device) if gflop is not None else None,
    }


def step_gflop(step, inputs) -> float:
    """GFLOP of the matrix products and convolutions of one training step, forward and backward
    (``torch.utils.flop_counter``; the deformable attention op and elementwise work are not
    counted): a checkout that computes the same mathematics counts the same."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(inputs)
    return counter.get_total_flops() / 1e9


def matmul_rate(device: str, n: int = 2048) -> float:
    """GFLOP/s of an (n, n) x (n, n) float32 matrix product on ``device`` (best of 5, the
    worker's threads): what the step's matrix products and convolutions could run at."""
    import torch

    from common import median_time

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = min(median_time(lambda: a @ b, 1, device) for _ in range(5))
    return 2 * n**3 / best / 1e9


def max_loss_difference(a: List[Dict[str, float]], b: List[Dict[str, float]]) -> float:
    """Largest absolute difference between two runs' loss terms over all iterations (inf when
    the runs have different iterations or loss names)."""
    if len(a) != len(b) or any(x.keys() != y.keys() for x, y in zip(a, b)):
        return float("inf")
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def compare(results: Dict[str, List[Dict]]) -> Dict[str, float]:
    """Ratios this / baseline of the median time per iteration and of the median peak memory
    over the rounds, and the largest loss difference (first rounds; every round of a checkout
    computes the same losses)."""
    this, base = results["this"], results["baseline"]
    sec = {k: statistics.median(t for r in rs for t in r["times"]) for k, rs in results.items()}
    mem = {k: statistics.median(r["peak_mb_per_image"] for r in rs) for k, rs in results.items()}
    tensors = {k: statistics.median(r["tensor_peak_mb_per_image"] for r in rs) for k, rs in results.items()}
    return {
        "time_ratio": sec["this"] / sec["baseline"],
        "memory_ratio": mem["this"] / mem["baseline"],
        "tensor_memory_ratio": tensors["this"] / tensors["baseline"],
        "sec": sec,
        "mem": mem,
        "tensors": tensors,
        "loss_diff": max_loss_difference(this[0]["losses"], base[0]["losses"]),
        "rounds_agree": max(max_loss_difference(r["losses"], this[0]["losses"]) for r in this),
        "baseline_zero_grad_first": base[0]["zero_grad_first"],
        "baseline_gflop": base[0]["gflop_per_iter"],
    }


def _order(zero_grad_first: bool) -> str:
    if zero_grad_first:
        return "gradients freed before the forward (`zero_grad`, forward, backward, step)"
    return "detectron2's `SimpleTrainer` order (forward, `zero_grad`, backward, step)"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=384, help="square training crop (LSJ IMAGE_SIZE)")
    parser.add_argument("--batch", type=int, default=2, help="images per iteration")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (after 2 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="git revision to measure side by side")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --baseline: runs per checkout, alternating (fresh process each)")
    parser.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="config options for this checkout only (not the baseline), e.g. "
                        "MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING True")
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep",
                        help="CPU runs: glibc malloc setting, see MALLOC_MODES in benchmarks/common.py")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    import torch

    from common import MALLOC_MODES, cpu_model, load_average, revision_checkout, run_worker, write_section

    spec = {"repo": REPO, "config": args.config, "opts": args.opts, "device": args.device, "size": args.size,
            "batch": args.batch, "iters": args.iters, "threads": args.threads, "amp": args.amp,
            "malloc": args.malloc, "count_flops": True}
    comparison = None
    if args.baseline:
        results: Dict[str, List[Dict]] = {"baseline": [], "this": []}
        with revision_checkout(args.baseline) as base_repo:
            for round_index in range(args.rounds):
                for name, repo in (("baseline", base_repo), ("this", REPO)):
                    opts = args.opts if name == "this" else []
                    worker_spec = dict(spec, repo=repo, opts=opts, count_flops=round_index == 0)
                    res = run_worker(__file__, worker_spec, cwd=repo)
                    results[name].append(res)
                    print(f"{name}: {res['sec_per_iter']:.2f} s / iter, "
                          f"{res['peak_mb_per_image']:.0f} MB / image, tensors "
                          f"{res['tensor_peak_mb_per_image']:.0f} MB / image", flush=True)
        comparison = compare(results)
        r = results["this"][0]
        r = dict(r, sec_per_iter=comparison["sec"]["this"], peak_mb_per_image=comparison["mem"]["this"],
                 tensor_peak_mb_per_image=comparison["tensors"]["this"])
    else:
        r = run_worker(__file__, spec, cwd=REPO)
    device = args.device + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
    cells = [f"`{args.config}`" + (f" {' '.join(args.opts)}" if args.opts else ""), device + (" AMP" if args.amp else ""), f"{args.size}x{args.size}",
             str(args.batch), f"{r['sec_per_iter']:.2f}", f"{r['peak_mb_per_image']:.0f}",
             f"{r['tensor_peak_mb_per_image']:.0f}", str(r["finite"])]
    header = ["config", "device", "crop", "batch", "s / iter", "peak memory / image (MB)",
              "tensor peak / image (MB)", "losses finite"]
    if comparison:
        c = comparison
        cells += [f"{c['sec']['baseline']:.2f}", f"{c['mem']['baseline']:.0f}", f"{c['tensors']['baseline']:.0f}",
                  f"{c['time_ratio']:.2f}", f"{c['memory_ratio']:.2f}", f"{c['tensor_memory_ratio']:.2f}",
                  f"{c['loss_diff']:.1e}"]
        header += [f"{args.baseline}: s / iter", f"{args.baseline}: MB / image", f"{args.baseline}: tensor MB / image",
                   "time ratio", "memory ratio", "tensor memory ratio", "max loss diff"]
    table = "\n".join([
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        "| " + " | ".join(cells) + " |",
    ])
    cmd = "python benchmarks/training.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## Training (whole model)" + (f", `{' '.join(args.opts)}`" if args.opts else ""),
        "",
        f"- date: {datetime.date.today().isoformat()}; command: `{cmd.strip()}`",
        f"- CPU: {cpu_model()}, {args.threads} threads; torch {torch.__version__}; random weights "
        "(seed 0); synthetic batches of random rectangles; the config's optimizer (AdamW) and losses",
        f"- s / iter: median of {args.iters} iterations after 2 warm-up ones; peak memory: CUDA "
        "peak allocated above the model and optimizer (GPU) or growth of peak RSS (CPU), per image; "
        "tensor peak (CPU): in one more, untimed step, the most bytes held at once by the tensors "
        "created in it (activations, gradients, temporaries; `PeakTensorMemory` in "
        "benchmarks/common.py), per image: what the RSS figure would be without the allocator's "
        "retained and fragmented memory",
        f"- load average 1/5/15 min at the end: {load_average()} on {os.cpu_count()} cores",
        f"- allocator (`--malloc {args.malloc}`, CPU only): {MALLOC_MODES[args.malloc]}",
        f"- step order: {_order(r['zero_grad_first'])} (as this checkout's `train_net.py` trainer)",
        f"- matrix products and convolutions (forward and backward, `torch.utils.flop_counter`): "
        f"{r['gflop_per_iter']:.1f} GFLOP per iteration"
        + (f" ({args.baseline}: {comparison['baseline_gflop']:.1f})" if comparison else "")
        + f"; this device's float32 matrix product (2048^3) runs at {r['matmul_gflops']:.0f} GFLOP/s, "
        f"at which they alone would take {r['gflop_per_iter'] / r['matmul_gflops']:.2f} s",
    ]
    if comparison:
        lines.append(
            f"- baseline: git revision `{args.baseline}`, run alternately with this checkout "
            f"{args.rounds} times (fresh process each); s / iter: median over all rounds' timed "
            "iterations; memory: median over rounds; ratios this / baseline; max loss diff: largest "
            f"absolute difference of any loss term in any of the {args.iters + 2} iterations (this "
            f"checkout's rounds agree to {comparison['rounds_agree']:.1e}); its step order, as its "
            f"trainer: {_order(comparison['baseline_zero_grad_first'])}")
    lines += [
        "- for comparison, the paper's figure for the COCO R50 model at 1024x1024 LSJ on a GPU is "
        "about 6 GB of memory per image; it can only be checked with `--device cuda --size 1024`",
        "",
        table,
    ]
    print("\n".join(lines))
    if not args.no_write:
        # one section per set of options, so that a run with options keeps the plain run's table
        section = "training" + (f", {' '.join(args.opts)}" if args.opts else "")
        write_section(section, "\n".join(lines))
        print(f"\nwrote the {section!r} section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
