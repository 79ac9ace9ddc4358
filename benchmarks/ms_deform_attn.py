"""Benchmark of the MSDeformAttn kernels against the PyTorch reference, at pixel-decoder shapes.

For an input image of size R x R the pixel decoder attends over levels R/8, R/16, R/32 with
8 heads x 32 channels, 4 points, and one query per position (Lq = S). Forward and
forward+backward (gradients of value, sampling locations and attention weights) are timed for
the compiled kernel (through `ms_deform_attn`, the path `MSDeformAttn` uses) and for
`ms_deform_attn_core_pytorch` in the same run; each figure is the median of `--repeats` runs
after one warm-up.

    .venv/bin/python benchmarks/ms_deform_attn.py --threads 2          # CPU (+ GPU if present)
    .venv/bin/python benchmarks/ms_deform_attn.py --device cuda --no-write

The table is printed and written to the MSDeformAttn section of benchmarks/RESULTS.md
(the section is replaced, the rest of the file is kept).
"""
import argparse
import datetime
import math
import os
import sys
from typing import Dict, List, Optional

import torch

from common import RESULTS, cpu_model, median_time, write_section  # this script's folder
from mask2former.modeling.pixel_decoder.ops.functions import (
    kernel_supports,
    ms_deform_attn,
    ms_deform_attn_core_pytorch,
)

HEADS, CHANNELS, POINTS = 8, 32, 4


def sampling_locations(shapes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(1, S, M, L, P, 2) locations as the pixel decoder makes them: each query's own position
    (its reference point, the same relative position on every level) plus per-head offsets of a
    few pixels (the MSDeformAttn initial pattern: head direction x (point index + 1)) and noise."""
    refs = []
    for h, w in shapes.tolist():
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        refs.append(torch.stack([xs, ys], -1).view(-1, 2))
    ref = torch.cat(refs)  # (S, 2)
    n_l = len(shapes)
    thetas = torch.arange(HEADS, dtype=torch.float32) * (2 * math.pi / HEADS)
    dirs = torch.stack([thetas.cos(), thetas.sin()], -1)
    dirs = dirs / dirs.abs().max(-1, keepdim=True)[0]
    scale = torch.arange(1, POINTS + 1, dtype=torch.float32)
    pattern = dirs[:, None, None, :] * scale[None, None, :, None]  # (M, 1, P, 2) pixels
    offsets = pattern + torch.randn(ref.shape[0], HEADS, n_l, POINTS, 2, generator=g)
    normalizer = torch.stack([shapes[:, 1], shapes[:, 0]], -1).float()  # (L, 2) = (W, H)
    return (ref[:, None, None, None, :] + offsets / normalizer[None, None, :, None, :])[None]


def make_inputs(
    resolution: int, device: str, dtype: torch.dtype, locations: str = "decoder", seed: int = 0
) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[resolution // s, resolution // s] for s in (8, 16, 32)], dtype=torch.int64)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s, n_l = int(sizes.sum()), len(shapes)
    attn = torch.randn(1, s, HEADS, n_l * POINTS, generator=g).softmax(-1).view(1, s, HEADS, n_l, POINTS)
    inputs = {
        "value": torch.randn(1, s, HEADS, CHANNELS, generator=g).to(dtype),
        "shapes": shapes,
        "starts": starts,
        # "uniform": worst case for memory locality, every point anywhere in its level
        "loc": sampling_locations(shapes, g) if locations == "decoder" else torch.rand(1, s, HEADS, n_l, POINTS, 2, generator=g),
        "attn": attn,
        "grad": torch.randn(1, s, HEADS * CHANNELS, generator=g).to(dtype),
    }
    return {k: v.to(device) for k, v in inputs.items()}


def reference_fn(x: Dict[str, torch.Tensor], value, loc, attn) -> torch.Tensor:
    dtype = value.dtype  # the reference runs entirely in value's dtype
    return ms_deform_attn_core_pytorch(value, x["shapes"], loc.to(dtype), attn.to(dtype))


def kernel_fn(x: Dict[str, torch.Tensor], value, loc, attn) -> torch.Tensor:
    return ms_deform_attn(value, x["shapes"], x["starts"], loc, attn)


def run_case(resolution: int, device: str, dtype: torch.dtype, repeats: int, locations: str) -> Dict[str, object]:
    x = make_inputs(resolution, device, dtype, locations)
    if not kernel_supports(x["value"]):
        raise RuntimeError(f"no compiled kernel for {dtype} on {device}; build mask2former._C first")
    leaves = {k: x[k].clone().requires_grad_(True) for k in ("value", "loc", "attn")}

    def forward(fn):
        def run():
            with torch.no_grad():
                fn(x, x["value"], x["loc"], x["attn"])
        return run

    def forward_backward(fn):
        def run():
            for t in leaves.values():
                t.grad = None
            fn(x, leaves["value"], leaves["loc"], leaves["attn"]).backward(x["grad"])
        return run

    row = {"resolution": resolution, "device": device, "dtype": str(dtype).replace("torch.", ""),
           "queries": x["value"].shape[1], "locations": locations}
    with torch.no_grad():
        out_k = kernel_fn(x, x["value"], x["loc"], x["attn"]).float()
        out_r = reference_fn(x, x["value"].float(), x["loc"], x["attn"])
    row["max_abs_err"] = (out_k - out_r).abs().max().item()
    row["ref_fwd"] = median_time(forward(reference_fn), repeats, device)
    row["ker_fwd"] = median_time(forward(kernel_fn), repeats, device)
    row["ref_fwdbwd"] = median_time(forward_backward(reference_fn), repeats, device)
    row["ker_fwdbwd"] = median_time(forward_backward(kernel_fn), repeats, device)
    return row


def format_table(rows: List[Dict[str, object]]) -> str:
    head = ("| input | locations | device | dtype | Lq=S | reference fwd | kernel fwd | fwd speed-up "
            "| reference fwd+bwd | kernel fwd+bwd | fwd+bwd speed-up | max abs err vs fp32 ref |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['resolution']}x{r['resolution']} | {r['locations']} | {r['device']} | {r['dtype']} | {r['queries']} "
            f"| {r['ref_fwd'] * 1e3:.2f} ms | {r['ker_fwd'] * 1e3:.2f} ms "
            f"| {r['ref_fwd'] / r['ker_fwd']:.2f}x "
            f"| {r['ref_fwdbwd'] * 1e3:.2f} ms | {r['ker_fwdbwd'] * 1e3:.2f} ms "
            f"| {r['ref_fwdbwd'] / r['ker_fwdbwd']:.2f}x | {r['max_abs_err']:.2e} |"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="input resolutions")
    parser.add_argument("--repeats", type=int, default=5, help="timed CPU runs per figure (median)")
    parser.add_argument("--gpu-repeats", type=int, default=50, help="timed GPU runs per figure")
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    parser.add_argument(
        "--locations", nargs="+", choices=["decoder", "uniform"], default=["decoder", "uniform"],
        help="sampling locations: as in the pixel decoder, and/or uniformly random (worst case)",
    )
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS}")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    if args.device in ("all", "cpu"):
        for locations in args.locations:
            for res in args.sizes:
                rows.append(run_case(res, "cpu", torch.float32, args.repeats, locations))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    gpu = None
    if args.device in ("all", "cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        for dtype in (torch.float32, torch.bfloat16):
            for res in args.sizes:
                rows.append(run_case(res, "cuda", dtype, args.gpu_repeats, "decoder"))
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    elif args.device == "cuda":
        sys.exit("--device cuda: no GPU available")

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    table = format_table(rows)
    print("\n" + table)
    cmd = "python benchmarks/ms_deform_attn.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "## MSDeformAttn (multi-scale deformable attention)",
        "",
        f"- date: {datetime.date.today().isoformat()}; command: `{cmd.strip()}`",
        f"- CPU: {cpu_model()}, {args.threads} threads (torch.set_num_threads); GPU: {gpu or 'none'}",
        f"- torch {torch.__version__}; shapes: N=1, levels 1/8, 1/16, 1/32 of the input, "
        f"{HEADS} heads x {CHANNELS} channels, {POINTS} points, Lq = S",
        "- sampling locations: `decoder` = as in the pixel decoder (each query's own position + "
        "head-pattern offsets of a few pixels + noise); `uniform` = uniformly random in every level "
        "(worst case for memory locality)",
        f"- each figure: median of {args.repeats} (CPU) / {args.gpu_repeats} (GPU) runs after one "
        "warm-up; reference and kernel measured in the same run. The CPU machine is shared with "
        f"other jobs (load average 1/5/15 min at the end of this run: {load} on "
        f"{os.cpu_count()} cores), so absolute times are noisy; the ratios are the meaningful figures.",
        "- kernel = `ms_deform_attn` (compiled `mask2former._C`, as used by `MSDeformAttn`); "
        "reference = `ms_deform_attn_core_pytorch` (F.grid_sample); fwd+bwd computes gradients "
        "of value, sampling locations and attention weights. bf16 rows: bf16 value with fp32 "
        "locations/weights for the kernel, all-bf16 reference; error column vs the fp32 reference "
        "(fp32 errors of ~1e-6 come from the reference's own rounding of `2 * loc - 1`).",
        "",
        table,
    ])
    if not args.no_write:
        write_section("ms_deform_attn", text)
        print(f"\nwrote the MSDeformAttn section of {RESULTS}")


if __name__ == "__main__":
    main()
