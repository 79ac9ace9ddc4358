"""GPU readiness check: build, CUDA tests (also under compute-sanitizer), op and model benchmarks,
each step in a fresh process with a time budget, then one summary table.

Run through `bash benchmarks/gpu_check.sh` (which skips on machines without CUDA and sets up
the Python path). The timings come from the existing benchmarks: `ms_deform_attn.py`'s inputs
and `common.median_time` for the op, the `inference.py` and `training.py` workers for the model.

    python benchmarks/gpu_check.py [--only STEP ...] [--budget-scale 1.5]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")
PAPER_MB_PER_IMAGE = 6 * 1024  # the paper's ~6 GB per image at 1024x1024 LSJ
OP_TESTS = ["tests/modeling/test_ms_deform_attn.py", "tests/modeling/test_ms_deform_attn_checks.py", "tests/modeling/test_ms_deform_attn_cuda.py"]
# compute-sanitizer runs every kernel of the process many times slower: the stress cases only,
# without the >2^31-element one (GBs of checked memory).
SANITIZED = ["tests/modeling/test_ms_deform_attn_cuda.py", "-k", "not 2_31 and not spread"]
RACECHECKED = SANITIZED[:2] + ["-k", "head_dims and (48 or 256)"]
SWIN_L = "configs/coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
R50 = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"


def _pytest(*args: str) -> List[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]


def _sanitized(tool: str, tests: Sequence[str]) -> List[str]:
    return ["compute-sanitizer", "--tool", tool, "--error-exitcode", "1", *_pytest(*tests)]


def _build_env() -> Dict[str, str]:
    import torch

    major, minor = torch.cuda.get_device_capability()
    env = {"FORCE_CUDA": "1", "MAX_JOBS": str(os.cpu_count() or 4)}
    env["TORCH_CUDA_ARCH_LIST"] = os.environ.get("TORCH_CUDA_ARCH_LIST") or f"{major}.{minor}"
    return env


# ------------------------------------------------------------------ measurements (child processes)
def _op_inputs(dtype, channels: int = 32):
    import ms_deform_attn as bench  # benchmarks/ms_deform_attn.py

    bench.CHANNELS = channels  # this child process's own copy of the module
    return bench.make_inputs(1024, "cuda", dtype)


def op_benchmark() -> str:
    """Kernel vs PyTorch at 1024x1024 pixel-decoder shapes, fp32 and bf16."""
    import torch
    import ms_deform_attn as bench

    cells = []
    for dtype in (torch.float32, torch.bfloat16):
        r = bench.run_case(1024, "cuda", dtype, 20, "decoder")
        cells.append(
            f"{r['dtype']}: fwd {r['ker_fwd'] * 1e3:.2f} ms ({r['ref_fwd'] / r['ker_fwd']:.1f}x), "
            f"fwd+bwd {r['ker_fwdbwd'] * 1e3:.2f} ms ({r['ref_fwdbwd'] / r['ker_fwdbwd']:.1f}x), "
            f"err {r['max_abs_err']:.1e}"
        )
    return "; ".join(cells)


def _fwd_bwd(x):
    import torch
    from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn

    leaves = [x[k].clone().requires_grad_(True) for k in ("value", "loc", "attn")]
    out = ms_deform_attn(leaves[0], x["shapes"], x["starts"], leaves[1], leaves[2])
    return torch.autograd.grad(out, leaves, x["grad"])


def grad_reduce() -> str:
    """Backward with the warp-run reduction vs the former atomics, D = 96 and 256 in fp32."""
    import torch
    from common import median_time

    cells = []
    for channels in (96, 256):
        x = _op_inputs(torch.float32, channels)
        times, grads = {}, {}
        for mode in ("runs", "atomic"):
            os.environ["MASK2FORMER_MSDA_GRAD_REDUCE"] = mode
            grads[mode] = _fwd_bwd(x)
            times[mode] = median_time(lambda: _fwd_bwd(x), 10, "cuda")
        diff = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(grads["runs"], grads["atomic"]))
        cells.append(f"D={channels}: {times['runs'] * 1e3:.2f} vs {times['atomic'] * 1e3:.2f} ms "
                     f"({times['atomic'] / times['runs']:.2f}x), rel. diff {diff:.1e}")
    os.environ.pop("MASK2FORMER_MSDA_GRAD_REDUCE")
    return "; ".join(cells)


def backward_spread() -> str:
    """Largest relative difference between 5 runs of the fp32 backward (float atomics)."""
    import torch

    x = _op_inputs(torch.float32)
    runs = [_fwd_bwd(x) for _ in range(5)]
    names = ("value", "loc", "attn")
    spread = {n: max(((r[i] - runs[0][i]).abs().max() / runs[0][i].abs().max()).item() for r in runs[1:])
              for i, n in enumerate(names)}
    return ", ".join(f"grad {n} {v:.1e}" for n, v in spread.items()) + " (max |diff| / max |grad|)"


def _worker(script: str, spec: Dict) -> Dict:
    from common import run_worker

    base = {"repo": REPO, "device": "cuda", "threads": 8, "malloc": "keep"}
    return run_worker(os.path.join(BENCH, script), dict(base, **spec), cwd=REPO)


def inference() -> str:
    """COCO panoptic R50 at 800x1333, batch 1, fp32 and AMP."""
    cells = []
    for amp in (False, True):
        r = _worker("inference.py", {"task": "panoptic", "backbone": "R50", "size": [800, 1333],
                                     "batch": 1, "amp": amp, "repeats": 5})
        cells.append(f"{'AMP' if amp else 'fp32'} {r['total'] * 1e3:.1f} ms/img, peak {r['peak_memory_mb']:.0f} MB")
    return "; ".join(cells)


def _training(config: str) -> str:
    r = _worker("training.py", {"config": config, "size": 1024, "batch": 2, "iters": 1, "amp": True})
    mb = r["peak_mb_per_image"]
    return (f"{mb / 1024:.2f} GB/img ({mb / PAPER_MB_PER_IMAGE:.2f}x the paper's 6 GB), "
            f"{r['sec_per_iter']:.2f} s/iter, losses finite: {r['finite']}")


# name -> (budget in seconds, what it checks, a command or a function run in a fresh process)
STEPS: Dict[str, tuple] = {
    "build": (150, "build mask2former._C with CUDA", [sys.executable, "setup.py", "build_ext", "--inplace"]),
    "tests": (60, "op tests on CPU and CUDA", _pytest(*OP_TESTS)),
    "memcheck": (100, "compute-sanitizer memcheck, stress tests", _sanitized("memcheck", SANITIZED)),
    "racecheck": (45, "compute-sanitizer racecheck, D=48/256", _sanitized("racecheck", RACECHECKED)),
    "op": (25, "op 1024x1024 vs PyTorch", op_benchmark),
    "grad-reduce": (15, "backward: warp runs vs atomics", grad_reduce),
    "spread": (10, "backward run-to-run spread (fp32)", backward_spread),
    "inference": (35, "R50 panoptic 800x1333, fp32 / AMP", inference),
    "train-r50": (35, "training memory R50, 1024 LSJ, AMP", lambda: _training(R50)),
    "train-swin-l": (40, "training memory Swin-L, 1024 LSJ, AMP", lambda: _training(SWIN_L)),
}


def _summary(output: str) -> str:
    """The line that says how a command went: pytest's totals or the sanitizer's error count."""
    lines = [l.strip() for l in output.splitlines() if l.strip()]
    for marker in ("ERROR SUMMARY", " passed", " failed", " error"):
        hits = [l for l in lines if marker in l]
        if hits:
            return hits[-1].strip("= ")
    return lines[-1][-160:] if lines else ""


def run_step(name: str, budget: float, log_dir: str) -> Dict:
    _, _, what = STEPS[name]
    cmd = what if isinstance(what, list) else [sys.executable, __file__, "--child", name]
    env = dict(os.environ)
    if name in ("memcheck", "racecheck"):
        env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"  # so that memcheck sees each tensor's bounds
    if name == "build":
        env.update(_build_env())
    log = os.path.join(log_dir, name + ".log")
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=budget)
            status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and the workers it started
            out, _ = proc.communicate()
            status = "timeout"
        f.write(out)
    seconds = time.perf_counter() - start
    if isinstance(what, list) or status != "ok":
        result = _summary(out)
    else:
        result = json.loads(out.strip().splitlines()[-1])["result"]
    return {"step": name, "what": STEPS[name][1], "status": status, "seconds": seconds, "budget": budget, "result": result, "log": log}


def format_table(rows: List[Dict]) -> str:
    lines = ["| step | checks | status | s (budget) | result |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['what']} | {r['status']} | {r['seconds']:.0f} ({r['budget']:.0f}) | {r['result']} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(STEPS), help="run these steps only")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiplies every step's budget")
    parser.add_argument("--log-dir", default=os.path.join(REPO, "output", "gpu_check"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, BENCH)
    if args.child:
        fn: Callable[[], str] = STEPS[args.child][2]
        print(json.dumps({"result": fn()}))
        return 0
    os.makedirs(args.log_dir, exist_ok=True)
    rows = []
    for name in args.only or list(STEPS):
        rows.append(run_step(name, STEPS[name][0] * args.budget_scale, args.log_dir))
        r = rows[-1]
        print(f"gpu_check: {name}: {r['status']} in {r['seconds']:.0f} s: {r['result']}", flush=True)
        if name == "build" and r["status"] != "ok":
            break  # nothing else can run without the extension
    print("\n" + format_table(rows) + f"\n\nlogs: {args.log_dir}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
