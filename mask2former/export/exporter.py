"""Tracing an :class:`~mask2former.export.model.ExportableMaskFormer` into an ONNX or a
TorchScript file whose batch size, height and width are dynamic."""
import contextlib
import json
import os
import warnings
from typing import Iterator

import onnx
import torch
from torch import nn

from ..modeling.pixel_decoder.ops.modules import MSDeformAttn
from ..modeling.meta_arch.maskformer import MaskFormer
from ..modeling.transformer_decoder.mask2former_transformer_decoder import MultiScaleMaskedTransformerDecoder
from . import chunked_gather, postprocess_graph
from .model import ExportableMaskFormer, deployment_info

INPUT_NAME = "image"
OUTPUT_NAMES = ("pred_logits", "pred_masks")
# opset 17: the one the export tests and benchmarks ran (the deformable attention needs no newer op).
ONNX_OPSET = 17
EXPORT_FORMATS = ("onnx", "torchscript")
FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.ts"}
INFO_FILE = "export_info.json"


@contextlib.contextmanager
def traceable_modules(model: nn.Module) -> Iterator[None]:
    """The exportable variants of ``model``'s modules while the context lasts: every
    ``MSDeformAttn`` on standard operators (a trace made outside it would hold the compiled
    kernel) and the transformer decoder's attention masks as float additive masks (see their
    ``traceable`` flags). For an ``ExportableMaskFormer``, the encoder's deformable attention
    also knows what its query counts are multiples of (whole chunks in ONNX, ``chunked_gather``)."""
    layers = [m for m in model.modules() if isinstance(m, (MSDeformAttn, MultiScaleMaskedTransformerDecoder))]
    query_multiple = model.encoder_query_multiple() if isinstance(model, ExportableMaskFormer) else 0
    for layer in layers:
        layer.traceable = True
        if isinstance(layer, MSDeformAttn):
            layer.traced_query_multiple = query_multiple
    try:
        yield
    finally:
        for layer in layers:
            layer.traceable = False
            if isinstance(layer, MSDeformAttn):
                layer.traced_query_multiple = 0


def _quiet_trace(fn, model: nn.Module, *args, **kwargs):
    """Runs a tracer on ``model`` with its exportable variants (:func:`traceable_modules`),
    without its warnings about Python values: every shape-dependent value of the model is
    either computed from traced shapes or checked constant (tests/export/)."""
    with warnings.catch_warnings(), torch.no_grad(), traceable_modules(model):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return fn(model, *args, **kwargs)


def export_onnx(model: ExportableMaskFormer, sample: torch.Tensor, path: str) -> str:
    """Writes ``model`` traced on ``sample`` (B, C, H, W) to the ONNX file ``path``, and the
    post-processing's dense step beside it (``postprocess_graph.FILE_NAME``)."""
    axes = {
        INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
        OUTPUT_NAMES[0]: {0: "batch"},
        OUTPUT_NAMES[1]: {0: "batch", 2: "mask_height", 3: "mask_width"},
    }
    traced = path + ".traced"
    _quiet_trace(
        torch.onnx.export,
        model.eval(),
        (sample,),
        traced,
        opset_version=ONNX_OPSET,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes=axes,
        custom_opsets={chunked_gather.DOMAIN: 1},
    )
    try:
        graph = onnx.load(traced)
        chunked_gather.expand_gather_weighted_sums(graph)  # standard operators only from here
        onnx.save(graph, traced)
        os.replace(traced, path)
    finally:
        if os.path.exists(traced):
            os.remove(traced)
    postprocess_graph.write_dense_block_graph(os.path.dirname(os.path.abspath(path)), ONNX_OPSET)
    return path


def export_torchscript(model: ExportableMaskFormer, sample: torch.Tensor, path: str) -> str:
    """Writes ``model`` traced on ``sample`` (B, C, H, W) to the TorchScript file ``path``."""
    traced = _quiet_trace(torch.jit.trace, model.eval(), (sample,), check_trace=False)
    # Weights as constants: a graph traced with trainable weights fails on its in-place ops
    # when called outside torch.no_grad().
    torch.jit.freeze(traced, optimize_numerics=False).save(path)
    return path


def export(model: ExportableMaskFormer, sample: torch.Tensor, fmt: str, output_dir: str) -> str:
    """Exports ``model`` as ``fmt`` ("onnx" or "torchscript") into ``output_dir``; returns the
    file's path."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FILE_NAMES[fmt])
    writer = export_onnx if fmt == "onnx" else export_torchscript
    return writer(model, sample, path)


def write_deployment_info(model: MaskFormer, cfg, output_dir: str) -> str:
    """Writes ``model``'s :func:`~mask2former.export.model.deployment_info` to
    ``output_dir/export_info.json``; returns the file's path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, INFO_FILE)
    with open(path, "w") as f:
        json.dump(deployment_info(model, cfg), f, indent=2)
    return path
