#!/usr/bin/env python
"""
Convert a Hugging Face Mask2Former checkpoint (a ``save_pretrained`` directory of
``Mask2FormerForUniversalSegmentation`` with a Swin backbone) into this project's format:

    python tools/convert_hf_to_d2.py HF_DIR OUTPUT_DIR [--base-config CONFIG]

OUTPUT_DIR receives
- ``model_final.pth``: ``{"model": state dict}`` in our parameter names;
- ``config.yaml``: ``_BASE_`` a reference config of configs/ (the dataset guessed from the class
  count, the Swin size from the backbone; ``--base-config`` chooses another), overridden with
  every model setting of the HF config (classes, queries, decoder layers, Swin sizes, ...) and
  ``MODEL.WEIGHTS`` pointing at ``model_final.pth``;
- ``metadata.json``: ``{"class_names": [...]}`` from the HF ``id2label``; register them with
  ``mask2former.hf_conversion.register_class_names(NAME, "OUTPUT_DIR/metadata.json")`` and set
  ``DATASETS.TEST (NAME,)`` to have drawings use them.

The result is checked before the tool ends: the config's model takes the weights exactly.
Exit code 0 on success, 2 with a one-line message for bad input.
"""

import argparse
import glob
import json
import os
import sys
from typing import Any, Dict, Mapping

import torch
import yaml
from detectron2.modeling import build_model

from mask2former.checkpoint import CheckpointMismatchError, load_model_weights
from mask2former.config import build_config
from mask2former.hf_conversion import HFConversionError, load_hf_checkpoint
from mask2former.utils.config_merge import ConfigError

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

# class count -> the reference config folder of the dataset with that many classes; ADE20K,
# Cityscapes and Mapillary also have panoptic configs with their semantic class count
DATASET_FOLDERS = {
    133: "coco/panoptic-segmentation",
    80: "coco/instance-segmentation",
    150: "ade20k/semantic-segmentation",
    100: "ade20k/instance-segmentation",
    19: "cityscapes/semantic-segmentation",
    8: "cityscapes/instance-segmentation",
    65: "mapillary-vistas/semantic-segmentation",
}
# (EMBED_DIM, DEPTHS) -> the Swin size in reference config file names
SWIN_SIZES = {
    (96, (2, 2, 6, 2)): "tiny",
    (96, (2, 2, 18, 2)): "small",
    (128, (2, 2, 18, 2)): "base",
    (192, (2, 2, 18, 2)): "large",
}


def choose_base_config(overrides: Mapping[str, Any], configs_dir: str = CONFIGS_DIR) -> str:
    """
    The reference config a converted model is based on: the dataset folder from the class count
    (COCO panoptic if unknown), in it the Swin config of the same size, else the ResNet-50 one.
    Only dataset, input and solver settings come from it: the overrides set the whole model.
    """
    folder = DATASET_FOLDERS.get(overrides["MODEL.SEM_SEG_HEAD.NUM_CLASSES"], DATASET_FOLDERS[133])
    size = SWIN_SIZES.get(
        (overrides["MODEL.SWIN.EMBED_DIM"], tuple(overrides["MODEL.SWIN.DEPTHS"]))
    )
    patterns = [f"swin/maskformer2_swin_{size}_*.yaml"] if size else []
    for pattern in patterns + ["mask*_R50_*.yaml"]:
        found = sorted(glob.glob(os.path.join(configs_dir, folder, pattern)))
        if found:
            return found[0]
    raise HFConversionError(f"{configs_dir}/{folder}: no reference config to base the model on")


def nested(overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"A.B": v}`` -> ``{"A": {"B": v}}``, as a YAML config file writes it."""
    out: Dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return out


def convert(hf_dir: str, output_dir: str, base_config: str = "") -> str:
    """Write OUTPUT_DIR's three files (see the module doc); returns the config path."""
    state, info = load_hf_checkpoint(hf_dir)
    base_config = os.path.abspath(base_config or choose_base_config(info.overrides))
    if not os.path.isfile(base_config):
        raise HFConversionError(f"--base-config {base_config}: no such file")
    os.makedirs(output_dir, exist_ok=True)
    weights = os.path.abspath(os.path.join(output_dir, "model_final.pth"))
    torch.save({"model": state}, weights)
    config_path = os.path.join(output_dir, "config.yaml")
    body = {"_BASE_": os.path.relpath(base_config, os.path.abspath(output_dir))}
    body.update(nested({**info.overrides, "MODEL.WEIGHTS": weights}))
    with open(config_path, "w") as f:
        f.write(f"# converted from the Hugging Face checkpoint {os.path.abspath(hf_dir)}\n")
        f.write("# class names: metadata.json (mask2former.hf_conversion.register_class_names)\n")
        yaml.safe_dump(body, f, sort_keys=False, default_flow_style=None)
    with open(os.path.join(output_dir, "metadata.json"), "w") as f:
        json.dump(
            {"class_names": info.class_names, "hf_directory": os.path.abspath(hf_dir)}, f, indent=1
        )
    cfg, _ = build_config(argparse.Namespace(config_file=config_path, opts=["MODEL.DEVICE", "cpu"]))
    load_model_weights(build_model(cfg), weights)  # raises if anything does not fit
    return config_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("hf_dir", help="directory written by save_pretrained")
    parser.add_argument("output_dir")
    parser.add_argument("--base-config", default="", metavar="FILE",
                        help="reference config to base the output on (default: chosen from the model)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        config_path = convert(args.hf_dir, args.output_dir, args.base_config)
    except (HFConversionError, ConfigError, CheckpointMismatchError) as e:
        parser.error(str(e))
    print(f"wrote {config_path}, model_final.pth and metadata.json in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
