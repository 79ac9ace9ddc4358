#!/usr/bin/env python
"""
A user's demo script written against the ORIGINAL Mask2Former API: the config set-up of the
original ``demo/demo.py`` and its ``VisualizationDemo`` (``from predictor import
VisualizationDemo``, with ``demo/`` on the path as when the script sits there). It draws the
predictions on each input image into the output folder and prints one line per image.

    python tests/examples/original_api_demo.py --config-file CONFIG --input IMG [IMG ...] --output DIR [--opts KEY VALUE ...]
"""
import argparse
import os

from detectron2.config import get_cfg
from detectron2.data.detection_utils import read_image
from detectron2.projects.deeplab import add_deeplab_config

from mask2former import add_maskformer2_config
from predictor import VisualizationDemo


def setup_cfg(args):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main():
    parser = argparse.ArgumentParser(description="maskformer2 demo for builtin configs")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER)
    args = parser.parse_args()
    demo = VisualizationDemo(setup_cfg(args))
    os.makedirs(args.output, exist_ok=True)
    for path in args.input:
        img = read_image(path, format="BGR")
        predictions, visualized_output = demo.run_on_image(img)
        out_file = os.path.join(args.output, os.path.basename(path))
        visualized_output.save(out_file)
        print(f"{path}: {sorted(predictions)} -> {out_file}")


if __name__ == "__main__":
    main()
