"""Inference speed of whole Mask2Former models, broken down by stage.

For each case (config, input size, batch) a fresh worker process builds the model from the config
(random weights, seed 0), feeds it a batch of random images of exactly that size (the model's
input, i.e. after any test-time resize; outputs at the same size, or at the case's "output"
size like an image resized for the test) and times, per batch, the
stages of ``MaskFormer.forward``: backbone, pixel decoder, transformer decoder and
post-processing (``MaskFormer.inference``: semantic / panoptic / instance outputs as the config
turns them on), and inside post-processing the instance boxes (``mask_boxes``). Figures are medians
over ``--repeats`` batches after one warm-up.

    .venv/bin/python benchmarks/inference.py                          # default cases, CPU, 2 threads
    .venv/bin/python benchmarks/inference.py --cases full --device cuda --amp
    # a 3000x4000 image's outputs (input at the test size; large-full: at full size), peak RSS;
    # "large" runs it with the semantic output as scores (the default) and as labels
    .venv/bin/python benchmarks/inference.py --cases large --repeats 0 --rounds 1 --malloc default --distinct-instances
    # side by side with another checkout of the project (same cases, alternating runs):
    .venv/bin/python benchmarks/inference.py --baseline before=/tmp/baseline

With ``--baseline NAME=PATH`` each case also runs on the checkout at PATH (its own
``mask2former`` package), alternating with this one ``--rounds`` times; the faster round of each
is kept, and the table gives the ratio. Results go to the ``inference`` section of
benchmarks/RESULTS.md (unless ``--no-write``).
"""
import argparse
import datetime
import json
import os
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PANOPTIC_R50 = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
INSTANCE_R50 = "configs/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml"
SEMANTIC_R50 = "configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"
PANOPTIC_SWIN_T = "configs/coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml"
INSTANCE_SWIN_T = "configs/coco/instance-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml"
SEMANTIC_SWIN_T = "configs/ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml"
TASKS = {
    ("panoptic", "R50"): PANOPTIC_R50,
    ("instance", "R50"): INSTANCE_R50,
    ("semantic", "R50"): SEMANTIC_R50,
    ("panoptic", "Swin-T"): PANOPTIC_SWIN_T,
    ("instance", "Swin-T"): INSTANCE_SWIN_T,
    ("semantic", "Swin-T"): SEMANTIC_SWIN_T,
}
SIZES = [(512, 768), (800, 1333)]
LARGE = (3000, 4000)
STAGES = ["backbone", "pixel_decoder", "transformer_decoder", "postprocess"]
# parts of the post-processing stage, timed by wrapping a function: name -> (module, function)
PARTS = {"boxes": ("mask2former.modeling.segment_assembly", "mask_boxes")}
# the most of a batch's time the instance boxes may take (issue 15)
BOXES_BUDGET = 0.02


def case_list(which: str) -> List[Dict]:
    """(task, backbone, size, batch) cases: "default" is the CPU-friendly subset of "full"."""
    if which == "full":
        return [
            {"task": t, "backbone": b, "size": s, "batch": n}
            for (t, b) in TASKS
            for s in SIZES
            for n in (1, 4)
        ]
    if which == "quick":
        return [{"task": "panoptic", "backbone": "R50", "size": SIZES[0], "batch": 1}]
    if which in ("large", "large-full"):
        # a 3000x4000 photo with full-resolution outputs, processed at the config's test size
        # (short side 800) as DefaultPredictor and evaluation run it, or at its full size
        # (large: in both forms of the semantic output, MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT)
        size = LARGE if which == "large-full" else (800, 1067)
        forms = ("scores",) if which == "large-full" else ("scores", "labels")
        return [
            {"task": "panoptic", "backbone": "R50", "size": size, "output": LARGE, "batch": 1, "semantic_output": form}
            for form in forms
        ]
    cases = [{"task": "panoptic", "backbone": "R50", "size": s, "batch": 1} for s in SIZES]
    cases.append({"task": "panoptic", "backbone": "R50", "size": SIZES[0], "batch": 4})
    cases += [{"task": t, "backbone": "R50", "size": SIZES[0], "batch": 1} for t in ("instance", "semantic")]
    cases.append({"task": "panoptic", "backbone": "Swin-T", "size": SIZES[0], "batch": 1})
    # COCO evaluation as it runs: a 533x800 image resized to the 800 short side, outputs at 533x800
    cases.append({"task": "panoptic", "backbone": "R50", "size": (800, 1200), "output": (533, 800), "batch": 1})
    return cases


# ------------------------------------------------------------------------------ worker
def time_calls(module_name: str, function: str, sync: Callable[[], None]) -> Optional[List[float]]:
    """
    Replaces ``module_name.function`` by a wrapper that appends each call's duration to the
    returned list (which the caller clears); None when the checkout has no such function.
    """
    import importlib

    module = importlib.import_module(module_name)
    original = getattr(module, function, None)
    if original is None:
        return None
    durations: List[float] = []

    def timed(*args, **kwargs):
        sync()
        t = time.perf_counter()
        out = original(*args, **kwargs)
        sync()
        durations.append(time.perf_counter() - t)
        return out

    setattr(module, function, timed)
    return durations


def distinct_query_instances(mask_cls, topk: int, thing_only=None):
    """
    Stands in for ``postprocessing.select_instances`` under ``--distinct-instances``: ``topk``
    instances from as many distinct queries (each with its most likely class, thing classes
    when given), the most instance masks inference can make. With random weights the top
    (query, class) pairs can all be stuff classes (the COCO panoptic R50 config at 512x768 makes
    no instance at all), so that the instance output costs far less than with trained weights.
    """
    import torch

    probs = torch.softmax(mask_cls, dim=-1)[:, :-1]
    if thing_only is not None:
        probs = probs.masked_fill(~thing_only, 0.0)
    scores, labels = probs.max(dim=1)
    queries = scores.topk(min(topk, len(scores))).indices
    return scores[queries], labels[queries], queries


def measure_case(spec: Dict) -> Dict:
    """Runs one case in this process (with ``spec["repo"]``'s package) and returns its timings."""
    from common import checkout_config  # this checkout's benchmarks/ (the script's directory)

    opts = []
    if spec.get("semantic_output", "scores") != "scores":
        opts = ["MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT", spec["semantic_output"]]
    cfg = checkout_config(spec, TASKS[(spec["task"], spec["backbone"])], opts)
    import torch
    from detectron2.modeling import build_model

    device = spec["device"]
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    h, w = spec["size"]
    out_h, out_w = spec.get("output") or (h, w)
    g = torch.Generator().manual_seed(1)
    inputs = [
        {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), "height": out_h, "width": out_w}
        for _ in range(spec["batch"])
    ]
    head = model.sem_seg_head

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if spec.get("distinct_instances"):
        from mask2former.modeling import postprocessing

        if not hasattr(postprocessing, "select_instances"):
            raise RuntimeError(f"--distinct-instances: {spec['repo']} has no postprocessing.select_instances")
        postprocessing.select_instances = distinct_query_instances
    part_calls = {name: time_calls(module, function, sync) for name, (module, function) in PARTS.items()}

    def staged() -> Dict[str, float]:
        for calls in part_calls.values():
            if calls is not None:
                calls.clear()
        times = {}
        t = time.perf_counter()
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        sync()
        times["backbone"] = time.perf_counter() - t  # includes normalising and padding
        t = time.perf_counter()
        mask_features, _, multi_scale = head.pixel_decoder.forward_features(features)
        sync()
        times["pixel_decoder"] = time.perf_counter() - t
        t = time.perf_counter()
        outputs = head.predictor(multi_scale, mask_features, None)
        sync()
        times["transformer_decoder"] = time.perf_counter() - t
        t = time.perf_counter()
        results = model.inference(outputs, inputs, images)
        sync()
        times["postprocess"] = time.perf_counter() - t
        times["outputs_mb"] = output_bytes(results) / 2**20
        for name, calls in part_calls.items():
            times[name] = None if calls is None else sum(calls)
        return times

    autocast = torch.autocast("cuda", enabled=spec["amp"]) if device.startswith("cuda") else None
    rss_before = resident_mb()
    runs = []
    with torch.no_grad():
        for i in range(spec["repeats"] + 1):
            if autocast is not None:
                with autocast:
                    runs.append(staged())
            else:
                runs.append(staged())
    runs = runs[1:] or runs  # warm-up (kept with --repeats 0: one run, no warm-up)
    result = {k: statistics.median(r[k] for r in runs) for k in STAGES}
    result["total"] = statistics.median(sum(r[k] for k in STAGES) for r in runs)
    result["outputs_mb"] = runs[-1]["outputs_mb"]
    for name in PARTS:
        part = [r[name] for r in runs]
        # the part's share of each run's total, so that a noisy run does not skew it
        result[name] = None if None in part else statistics.median(part)
        result[name + "_share"] = None if None in part else statistics.median(
            r[name] / sum(r[k] for k in STAGES) for r in runs
        )
    if device.startswith("cuda"):
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # above the process with the model and the inputs built: what inference itself needs
        result["peak_growth_mb"] = result["peak_memory_mb"] - rss_before
    return result


def output_bytes(results) -> int:
    """Bytes of the tensors of inference's outputs: the semantic output (either form), panoptic
    ids, instance fields."""
    import torch

    tensors = []
    for r in results:
        tensors += [r.get(k) for k in ("sem_seg", "sem_seg_labels", "sem_seg_label_scores")]
        tensors.append(r.get("panoptic_seg", (None,))[0])
        if "instances" in r:
            tensors += [v.tensor if hasattr(v, "tensor") else v for v in r["instances"].get_fields().values()]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def resident_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ------------------------------------------------------------------------------ table
def format_table(rows: List[Dict], baselines: List[str]) -> str:
    head = ["task", "backbone", "input", "batch", "device"]
    head += [f"{s} (ms)" for s in ("backbone", "pixel dec.", "transf. dec.", "post-proc.")]
    head += [f"of which {name} (ms, % of latency)" for name in PARTS]
    head += ["latency / image (ms)", "images / s", "peak mem. (MB)", "peak growth (MB)", "outputs (MB)"]
    for name in baselines:
        head += [f"{name}: latency / image (ms)", f"this / {name}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cur, n = r["this"], r["batch"]
        size = f"{r['size'][0]}x{r['size'][1]}"
        if r.get("output"):
            size += f" (outputs {r['output'][0]}x{r['output'][1]})"
        if r.get("semantic_output", "scores") != "scores":
            size += f", semantic output {r['semantic_output']}"
        cells = [r["task"], r["backbone"], size, str(n), r["device_label"]]
        cells += [f"{cur[s] * 1e3:.0f}" for s in STAGES]
        cells += [
            "-" if cur.get(name) is None else f"{cur[name] * 1e3:.1f} ({cur[name + '_share'] * 100:.2f} %)"
            for name in PARTS
        ]
        cells += [f"{cur['total'] / n * 1e3:.0f}", f"{n / cur['total']:.2f}", f"{cur['peak_memory_mb']:.0f}"]
        cells += ["-" if cur.get(k) is None else f"{cur[k]:.0f}" for k in ("peak_growth_mb", "outputs_mb")]
        for name in baselines:
            base = r[name]
            cells += [f"{base['total'] / n * 1e3:.0f}", f"{cur['total'] / base['total']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def boxes_budget_line(rows: List[Dict]) -> str:
    """The largest share of a batch's time the instance boxes took, against BOXES_BUDGET."""
    shares = [r["this"]["boxes_share"] for r in rows if r["this"].get("boxes_share") is not None]
    if not shares:
        return "instance boxes: not timed (no instance output)"
    verdict = "within" if max(shares) < BOXES_BUDGET else "OVER"
    return (f"instance boxes: at most {max(shares) * 100:.2f} % of a batch's time, {verdict} the "
            f"{BOXES_BUDGET * 100:g} % budget")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", choices=["quick", "default", "full", "large", "large-full"], default="default")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="also run every case with CUDA autocast")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per run (median)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per case and checkout (fastest kept)")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=PATH",
                        help="another checkout to measure side by side")
    parser.add_argument("--note", action="append", default=[],
                        help="a line for RESULTS.md saying what a baseline is (repeatable)")
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep",
                        help="CPU runs: glibc malloc setting, see MALLOC_MODES in benchmarks/common.py")
    parser.add_argument("--distinct-instances", action="store_true",
                        help="instances from TEST.DETECTIONS_PER_IMAGE distinct queries (worst case "
                        "of the instance output), see distinct_query_instances")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure_case(json.loads(args.worker))))
        return
    from common import MALLOC_MODES, cpu_model, load_average, run_worker, write_section

    baselines = dict(b.split("=", 1) for b in args.baseline)
    checkouts = {"this": REPO, **baselines}
    precisions = [False] + ([True] if args.amp and args.device.startswith("cuda") else [])
    rows = []
    for case in case_list(args.cases):
        for amp in precisions:
            row = dict(case, device_label=args.device + (" AMP" if amp else " fp32"))
            for name, repo in checkouts.items():
                row[name] = None
            for _ in range(args.rounds):
                for name, repo in checkouts.items():
                    spec = dict(case, repo=repo, threads=args.threads, device=args.device,
                                amp=amp, repeats=args.repeats, malloc=args.malloc,
                                distinct_instances=args.distinct_instances)
                    res = run_worker(__file__, spec, cwd=repo)
                    if row[name] is None or res["total"] < row[name]["total"]:
                        row[name] = res
            rows.append(row)
            print(format_table([row], list(baselines)).splitlines()[-1], flush=True)

    table = format_table(rows, list(baselines))
    print("\n" + table)
    budget = boxes_budget_line(rows)
    print(budget)
    cmd = "python benchmarks/inference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    import torch

    text = "\n".join([
        "## Inference (whole model, by stage)" + (", 3000x4000 outputs" if args.cases.startswith("large") else "")
        + ("" if args.malloc == "keep" else f", `--malloc {args.malloc}`"),
        "",
        f"- date: {datetime.date.today().isoformat()}; command: `{cmd.strip()}`",
        f"- CPU: {cpu_model()}, {args.threads} threads; device: {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""),
        f"- allocator (`--malloc {args.malloc}`): {MALLOC_MODES[args.malloc]}",
        f"- torch {torch.__version__}; random weights (seed 0), random uint8 images of the given "
        "size fed to the model directly (outputs at the same size unless the table says "
        "otherwise); all outputs the config turns "
        "on (COCO panoptic configs: semantic + panoptic + instance)",
        f"- each figure: the faster of {args.rounds} runs (fresh process each), each "
        + (f"the median of {args.repeats} batches after one warm-up" if args.repeats else "one batch, no warm-up")
        + f"; load average 1/5/15 min at the end: "
        f"{load_average()} on {os.cpu_count()} cores",
        "- stages: backbone (with normalisation and padding), pixel decoder, transformer decoder, "
        "post-processing (`MaskFormer.inference`; of which the instance boxes, `mask_boxes`, with their "
        "median share of a batch's time); latency per image = batch time / batch; peak "
        "memory = the worker's peak RSS (CPU) or peak allocated CUDA memory (GPU); peak growth (CPU) = "
        "peak RSS minus the RSS before the first batch (model and inputs built); outputs = the bytes "
        "of the tensors inference returns (sem_seg, panoptic ids, instance fields), part of the growth",
        "- with random weights few queries pass the panoptic confidence threshold, so panoptic "
        "post-processing is cheaper than with trained weights"
        + ("; `--distinct-instances`: every instance from its own query (the most instance masks)"
           if args.distinct_instances else ""),
        *(f"- baseline `{n}`: the checkout at `{p}`" for n, p in baselines.items()),
        *(f"- {note}" for note in args.note),
        f"- {budget}",
        "",
        table,
    ])
    if not args.no_write:
        # one section per allocator setting, so that a run with the other keeps this one's table
        section = "inference" + (f", {args.cases}" if args.cases.startswith("large") else "")
        section += "" if args.malloc == "keep" else f", --malloc {args.malloc}"
        write_section(section, text)
        print(f"\nwrote the {section!r} section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
