#!/usr/bin/env python
r"""
Convert an ImageNet Swin Transformer checkpoint of the official release into a detectron2
checkpoint for the D2SwinTransformer backbone (``MODEL.WEIGHTS``):

    python tools/convert-pretrained-swin-model-to-d2.py IN.pth OUT.pkl

e.g. python tools/convert-pretrained-swin-model-to-d2.py swin_tiny_patch4_window7_224.pth \
        swin_tiny_patch4_window7_224.pkl

The release's files are {"model": state_dict}; D2SwinTransformer uses the same parameter names
(patch_embed.*, layers.{i}.blocks.{j}.*, layers.{i}.downsample.*), which are kept. Dropped:
the classifier (head.*), the norm of the last stage's pooled features (norm.*: the backbone has
its own norm0..norm3 over each stage's output, trained from scratch), and the shifted-window
attention masks (attn_mask: recomputed for every input size). OUT.pkl holds {"model": {name:
numpy array}, "__author__": "third_party", "matching_heuristics": True}.
"""

import importlib
import re
import sys
from typing import Dict, Mapping

import numpy as np
import torch


# the command line and the checkpoint reading / writing are the torchvision converter's, the
# script next to this one (on sys.path as this script's folder); its name has dashes, as the
# reference's, so it is imported by name through importlib
_d2 = importlib.import_module("convert-torchvision-to-d2")

# not parameters of the detection backbone (see the module docstring)
_DROPPED = re.compile(r"^(head|norm)\.|\.attn_mask$")
# backbone weights: the release's, and the per-stage norms of dense-prediction checkpoints
_KEPT = re.compile(r"^(patch_embed\.|layers\.|absolute_pos_embed$|norm\d+\.)")


def convert_swin(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """The backbone weights of an official Swin state dict, as numpy arrays.

    Raises:
        ValueError: ``state_dict`` has keys that a Swin Transformer (v1) does not have.
    """
    unknown = sorted(k for k in state_dict if not (_DROPPED.search(k) or _KEPT.match(k)))
    if unknown or not any(k.startswith("patch_embed.") for k in state_dict):
        raise ValueError(
            "not a Swin Transformer checkpoint of the official release: "
            + (f"unexpected keys {unknown[:5]}" if unknown else "no patch_embed.* weights")
        )
    return {k: v.detach().cpu().numpy() for k, v in state_dict.items() if not _DROPPED.search(k)}


def main(argv=None) -> int:
    return _d2.converter_main(
        argv, __doc__, convert_swin, "third_party",
        'official Swin checkpoint (.pth, {"model": state_dict})',
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
