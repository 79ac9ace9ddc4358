#!/usr/bin/env python
r"""
Count a Mask2Former model's FLOPs, activations and parameters, or print its structure, with
fvcore's jit-tracing counters (one fused multiply-add counts as one FLOP):

    python tools/analyze_model.py --config-file CONFIG --tasks flop parameter \
        [--num-inputs 3] [--task panoptic|instance|semantic] [--opts KEY VALUE ...]

e.g. python tools/analyze_model.py --config-file configs/synthetic/panoptic.yaml \
        --tasks flop activation parameter --opts MODEL.DEVICE cpu

FLOPs and activations are measured on the first images of DATASETS.TEST[0] (resized as at test
time) when that dataset is registered and on disk, else on random images of the test size
(INPUT.MIN_SIZE_TEST x 4/3 of it); the output says which. They include the inference post-
processing of the outputs that are on (--task keeps only one of them).
"""

import argparse
import logging
import os
import sys
from collections import Counter
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import nn


from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.export import TracingAdapter
from detectron2.modeling import build_model
from detectron2.utils.analysis import FlopCountAnalysis
from fvcore.nn import ActivationCountAnalysis, parameter_count_table
from fvcore.nn.jit_analysis import JitModelAnalysis
from fvcore.nn.jit_handles import bmm_flop_jit, generic_activation_jit, get_shape

from mask2former.config import build_config_or_exit
from mask2former.checkpoint import load_model_weights

TASKS = ("flop", "activation", "parameter", "structure")
OUTPUTS = ("semantic", "instance", "panoptic")


def ms_deform_attn_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """
    FLOPs of multi-scale deformable attention (``MSDeformAttnFunction``): per query, head,
    level, sampling point and channel, a bilinear sample (4 multiply-adds) and its attention
    weight (1), for value (N, S, M, D) and sampling_locations (N, Lq, M, L, P, 2).
    """
    n, _, m, d = get_shape(inputs[0])
    _, lq, _, n_levels, n_points, _ = get_shape(inputs[3])
    return 5 * n * lq * m * n_levels * n_points * d


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``beta * input + alpha * batch1 @ batch2`` (masked attention's logits): the bmm."""
    return bmm_flop_jit(inputs[1:3], outputs)


def mm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``mm`` (M, K) @ (K, N), also when written into ``out=`` (a third input, which
    fvcore's own handle rejects): M * K * N multiply-adds."""
    m, k = get_shape(inputs[0])
    n = get_shape(inputs[1])[1]
    return m * k * n


# ops that matter for Mask2Former and that fvcore has no handle for
EXTRA_FLOP_HANDLES = {
    "prim::PythonOp.MSDeformAttnFunction": ms_deform_attn_flop_jit,
    "aten::baddbmm": baddbmm_flop_jit,
}
# their outputs are activations as much as a linear layer's
EXTRA_ACTIVATION_HANDLES = {op: generic_activation_jit() for op in EXTRA_FLOP_HANDLES}
# the post-processing's GEMMs write into slices of their outputs (``out=``)
EXTRA_FLOP_HANDLES["aten::mm"] = mm_flop_jit


def _quiet(analysis: JitModelAnalysis) -> JitModelAnalysis:
    # unsupported ops are reported once by the caller; the criterion is never called in inference
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


def flop_stats(model: nn.Module, inputs: List[Dict]) -> Dict[str, Any]:
    """
    FLOPs of ``model`` on each input (one image per forward).

    Returns:
        dict: "gflops" (list, one per input), "by_operator" (Counter of GFLOPs averaged over
        inputs), "unsupported" (Counter: op name -> calls in the first input's trace; ops that
        were not counted).
    """
    gflops, by_operator, unsupported = [], Counter(), Counter()
    for i, x in enumerate(inputs):
        # detectron2's FlopCountAnalysis traces list[dict] inputs and skips elementwise ops
        analysis = _quiet(FlopCountAnalysis(model, [x]))
        analysis.set_op_handle(**EXTRA_FLOP_HANDLES)
        gflops.append(analysis.total() / 1e9)
        for op, count in analysis.by_operator().items():
            by_operator[op] += count / 1e9 / len(inputs)
        if i == 0:
            unsupported = Counter(analysis.unsupported_ops())
    return {"gflops": gflops, "by_operator": by_operator, "unsupported": unsupported}


def activation_stats(model: nn.Module, inputs: List[Dict]) -> Dict[str, Any]:
    """Activations (outputs of convolutions, linear layers and matrix products) of ``model`` on
    each input: "mactivations" (list of millions, one per input), "by_operator" (mean)."""
    counts, by_operator = [], Counter()
    for x in inputs:
        wrapper = TracingAdapter(model, [x], allow_non_tensor=True)
        analysis = _quiet(ActivationCountAnalysis(wrapper, wrapper.flattened_inputs))
        analysis.set_op_handle(**EXTRA_ACTIVATION_HANDLES)
        counts.append(analysis.total() / 1e6)
        for op, count in analysis.by_operator().items():
            by_operator[op] += count / 1e6 / len(inputs)
    return {"mactivations": counts, "by_operator": by_operator}


def parameter_stats(model: nn.Module, max_depth: int = 3) -> Tuple[int, str]:
    """(number of parameters, fvcore's table of parameters per module down to ``max_depth``)."""
    total = sum(p.numel() for p in model.parameters())
    return total, parameter_count_table(model, max_depth=max_depth)


def _dataset_records(name: str) -> List[Dict]:
    """The records of dataset ``name`` whose image files exist; [] when it is not usable (not
    registered, or its files are not on disk) rather than an error: random inputs are used."""
    if not name or name not in DatasetCatalog.list():
        return []
    image_root = MetadataCatalog.get(name).get("image_root", None)
    if image_root is not None and not os.path.isdir(image_root):
        return []  # checked first: some loaders would generate or download the data
    try:
        records = DatasetCatalog.get(name)
    except (OSError, ValueError, KeyError, AssertionError):
        return []
    return [r for r in records if os.path.isfile(r.get("file_name", ""))]


def _images(n: int, kind: str = "") -> str:
    return f"{n} {kind + ' ' if kind else ''}image{'s' if n != 1 else ''}"


def build_inputs(cfg: CfgNode, num_inputs: int, seed: int = 0) -> Tuple[List[Dict], str]:
    """
    ``num_inputs`` model inputs ({"image": (3, H, W) uint8, "height", "width"}) and a sentence
    saying where they come from: the first images of ``cfg.DATASETS.TEST[0]`` through the test
    mapper (resize to INPUT.MIN_SIZE_TEST), or random images of the test size when that
    dataset cannot be read.
    """
    name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else ""
    records = _dataset_records(name)[:num_inputs]
    if records:
        mapper = DatasetMapper(cfg, is_train=False)
        # the model reads only these; annotations would only burden the tracer's flattening
        inputs = [
            {k: x[k] for k in ("image", "height", "width")}
            for x in (mapper(dict(r)) for r in records)
        ]
        sizes = sorted({tuple(x["image"].shape[1:]) for x in inputs})
        return inputs, f"{_images(len(inputs))} of dataset {name!r} (sizes {sizes})"
    h = cfg.INPUT.MIN_SIZE_TEST
    w = min(int(round(h * 4 / 3)), cfg.INPUT.MAX_SIZE_TEST)
    g = torch.Generator().manual_seed(seed)
    inputs = [
        {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "height": h,
         "width": w}
        for _ in range(num_inputs)
    ]  # fmt: skip
    why = f"dataset {name!r} is not available" if name else "DATASETS.TEST is empty"
    return inputs, f"{_images(num_inputs, f'random {h}x{w}')} ({why})"


def _task_opts(task: str) -> List[str]:
    """Config overrides that turn on the inference output of ``task`` alone."""
    opts = []
    for t in OUTPUTS:
        opts += [f"MODEL.MASK_FORMER.TEST.{t.upper()}_ON", str(t == task)]
    return opts


def _outputs_on(model: nn.Module) -> List[str]:
    return [t for t in OUTPUTS if getattr(model, f"{t}_on", False)]


def _mean_std(values: List[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _print_counter(counter: Counter, unit: str) -> None:
    for op, value in counter.most_common():
        print(f"  {op:<32} {value:10.4f} {unit}")


def _load_local_weights(model: nn.Module, weights: str) -> str:
    # FLOPs barely depend on the weights (only through post-processing): a missing or remote
    # file is not fetched
    if weights and os.path.isfile(weights):
        load_model_weights(model, weights)
        return f"weights {weights}"
    return "random weights" + (f" ({weights!r} is not a local file)" if weights else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, required=True)
    parser.add_argument(
        "--num-inputs", type=int, default=3, help="images measured for flop / activation"
    )
    parser.add_argument(
        "--task", choices=OUTPUTS, help="measure with this inference output alone turned on "
        "(default: the outputs of MODEL.MASK_FORMER.TEST)"
    )  # fmt: skip
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], dest="flag_opts", metavar="KEY VALUE",
        help="config overrides (also accepted without --opts after any option but --tasks)",
    )  # fmt: skip
    parser.add_argument("opts", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.opts = list(args.opts or []) + list(args.flag_opts)
    if args.num_inputs < 1:
        parser.error(f"--num-inputs must be at least 1, got {args.num_inputs}")
    if args.task:
        args.opts += _task_opts(args.task)
    cfg = build_config_or_exit(parser, args)
    logging.getLogger("fvcore").setLevel(logging.ERROR)  # skipped-op warnings: reported below

    model = build_model(cfg)
    model.eval()
    print(f"Model: {cfg.MODEL.META_ARCHITECTURE} of {args.config_file}, {cfg.MODEL.DEVICE}, "
          f"{_load_local_weights(model, cfg.MODEL.WEIGHTS)}; "
          f"outputs on: {', '.join(_outputs_on(model))}")  # fmt: skip
    if "structure" in args.tasks:
        print(model)
    if "parameter" in args.tasks:
        total, table = parameter_stats(model)
        print(table)
        print(f"Parameters: {total} ({total / 1e6:.2f} M)")
    if not {"flop", "activation"} & set(args.tasks):
        return 0

    inputs, source = build_inputs(cfg, args.num_inputs)
    print(f"Inputs: {source}")
    if "flop" in args.tasks:
        stats = flop_stats(model, inputs)
        print("GFLOPs by operator (mean over inputs):")
        _print_counter(stats["by_operator"], "G")
        print(f"GFLOPs: {_mean_std(stats['gflops'])} (mean ± std over {len(inputs)} inputs)")
        if stats["unsupported"]:
            ops = ", ".join(f"{op} ({n}x)" for op, n in sorted(stats["unsupported"].items()))
            print(f"Not counted (no FLOP handle, mostly elementwise): {ops}")
    if "activation" in args.tasks:
        stats = activation_stats(model, inputs)
        print("Activations by operator (millions, mean over inputs):")
        _print_counter(stats["by_operator"], "M")
        print(
            f"Activations (M): {_mean_std(stats['mactivations'])} "
            f"(mean ± std over {len(inputs)} inputs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
