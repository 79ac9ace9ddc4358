#!/usr/bin/env python
"""
Export a Mask2Former image model to ONNX or TorchScript, in the manner of detectron2's
``tools/deploy/export_model.py``:

    python tools/deploy/export_model.py --config-file CONFIG --format onnx|torchscript \\
        --export-method tracing --output DIR [--sample-image IMAGE] [KEY VALUE ...]

The exported graph takes the normalised image, (B, C, H, W) float =
``(image - MODEL.PIXEL_MEAN) / MODEL.PIXEL_STD`` in ``INPUT.FORMAT`` channel order, of any
height and width (padding to the size divisibility is inside the graph), and returns the
per-query class logits (B, Q, K + 1) and mask logits (B, Q, H_pad / 4, W_pad / 4). The file is
``DIR/model.onnx`` or ``DIR/model.ts``; ``DIR/export_info.json`` holds what a runtime needs
to give ``demo/demo.py``'s results without the config (``mask2former.export.model.
deployment_info``): the test-time resize, channel order and normalisation, the output shapes,
the settings of ``mask2former/export/postprocess_numpy.py`` (NumPy only: the semantic, panoptic
and instance outputs from the logits) and the dataset's class names, colors and thing / stuff
split. Without ``--sample-image`` the trace runs on a random image; without ``MODEL.WEIGHTS``
the weights are random. A config that cannot be exported (a video model, another
meta-architecture, pixel or transformer decoder, backbone) stops with one message naming its
keys, before the config is checked and any model is built.
"""
import argparse
import logging
import sys

import torch

from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model

from mask2former.checkpoint import CheckpointReadError, load_model_weights
from mask2former.config import build_config_or_exit
from mask2former.export.exporter import EXPORT_FORMATS, export, write_deployment_info
from mask2former.export.model import ExportableMaskFormer, check_exportable_file
# The size of the random image traced without --sample-image: any size gives the same graph.
RANDOM_SAMPLE_SIZE = (256, 320)


def sample_image(cfg, path: str) -> torch.Tensor:
    """(C, H, W) float image in INPUT.FORMAT: ``path`` resized as at test time, or random."""
    if not path:
        return torch.randint(0, 256, (3, *RANDOM_SAMPLE_SIZE), dtype=torch.uint8).float()
    image = read_image(path, format=cfg.INPUT.FORMAT)
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    image = resize.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    parser.add_argument("--export-method", choices=["tracing"], default="tracing",
                        help="only tracing: the graph follows the traced shapes dynamically")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the exported file")
    parser.add_argument("--sample-image", default="", metavar="IMAGE", help="image to trace on")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    try:
        # before the config is checked: a video config's own keys are unknown to the image config
        check_exportable_file(args.config_file, args.opts)
    except ValueError as e:
        parser.error(f"{args.config_file}: {e}")
    cfg = build_config_or_exit(parser, args)
    model = build_model(cfg.clone()).to("cpu").eval()
    if cfg.MODEL.WEIGHTS:
        try:
            load_model_weights(model, cfg.MODEL.WEIGHTS)
        except (FileNotFoundError, CheckpointReadError, ValueError) as e:
            parser.error(str(e))
    else:
        print("warning: no MODEL.WEIGHTS given; exporting random weights", file=sys.stderr)
    image = sample_image(cfg, args.sample_image)
    normalised = ((image - model.pixel_mean) / model.pixel_std)[None]
    path = export(ExportableMaskFormer(model), normalised, args.format, args.output)
    info_path = write_deployment_info(model, cfg, args.output)
    print(f"exported {args.config_file} to {path} (input and post-processing settings: {info_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
