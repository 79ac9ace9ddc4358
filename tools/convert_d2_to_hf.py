#!/usr/bin/env python
"""
Convert one of this project's Swin Mask2Former checkpoints into a Hugging Face
``Mask2FormerForUniversalSegmentation`` directory (what ``from_pretrained`` reads):

    python tools/convert_d2_to_hf.py --config-file CONFIG CHECKPOINT OUTPUT_DIR \
        [--metadata metadata.json] [KEY VALUE ...]

OUTPUT_DIR receives ``config.json`` and ``model.safetensors``. The class names (``id2label``)
come from ``--metadata`` (``{"class_names": [...]}``, as ``tools/convert_hf_to_d2.py`` writes),
else from the detectron2 metadata of ``DATASETS.TEST[0]`` when it has one name per class, else
they are ``LABEL_<i>``. Hugging Face's Mask2Former has Swin backbones only: a ResNet model is
refused with a clear message. The checkpoint must fit the config's model exactly.
Exit code 0 on success, 2 with a one-line message for bad input.
"""

import argparse
import json
import os
import sys
from typing import List

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from mask2former.checkpoint import CheckpointMismatchError, CheckpointReadError, load_model_weights
from mask2former.config import build_config_or_exit
from mask2former.hf_conversion import (
    HFConversionError,
    d2_config_to_hf_config,
    d2_to_hf_state_dict,
    read_class_names,
)


def class_names(cfg, metadata_json: str) -> List[str]:
    """One name per class, in class-id order (see the module doc for where they come from)."""
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if metadata_json:
        return read_class_names(metadata_json)
    if cfg.DATASETS.TEST:
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        for key in ("stuff_classes", "thing_classes"):
            names = metadata.get(key, None)
            if names is not None and len(names) == num_classes:
                return list(names)
    return [f"LABEL_{i}" for i in range(num_classes)]


def convert(cfg, checkpoint: str, output_dir: str, metadata_json: str = "") -> None:
    """Write OUTPUT_DIR/config.json and model.safetensors."""
    from safetensors.torch import save_file

    hf_config = d2_config_to_hf_config(cfg, class_names(cfg, metadata_json))  # refuses ResNet first
    model = build_model(cfg)
    load_model_weights(model, checkpoint)
    state = d2_to_hf_state_dict(model.state_dict(), checkpoint)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("checkpoint", help="our .pth or .pkl checkpoint")
    parser.add_argument("output_dir")
    parser.add_argument("--metadata", default="", metavar="JSON", help='{"class_names": [...]}')
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    args.opts = ["MODEL.DEVICE", "cpu", *args.opts]
    cfg = build_config_or_exit(parser, args)
    try:
        convert(cfg, args.checkpoint, args.output_dir, args.metadata)
    except (
        HFConversionError,
        FileNotFoundError,
        CheckpointReadError,
        CheckpointMismatchError,
    ) as e:
        parser.error(str(e))
    print(f"wrote config.json and model.safetensors in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
