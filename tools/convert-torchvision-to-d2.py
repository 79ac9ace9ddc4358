#!/usr/bin/env python
"""
Convert a torchvision ResNet state dict (ResNet-18/34/50/101/152, ResNeXt) into a detectron2
ResNet checkpoint that ``MODEL.WEIGHTS`` can load:

    python tools/convert-torchvision-to-d2.py IN.pth OUT.pkl

e.g. python tools/convert-torchvision-to-d2.py resnet50-0676ba61.pth R-50.pkl

Names are mapped to detectron2's (conv1 -> stem.conv1, bn1 -> stem.conv1.norm, layerN -> res{N+1},
bnK -> convK.norm, downsample.0/1 -> shortcut / shortcut.norm); the classifier (fc) and the BN
batch counters are dropped. OUT.pkl holds {"model": {name: numpy array}, "__author__":
"torchvision", "matching_heuristics": True}: detectron2 then matches the names to the model's
``backbone.*`` parameters by suffix.

The weights expect what torchvision's models do: RGB input normalized by the ImageNet mean and
std, i.e. INPUT.FORMAT "RGB", MODEL.PIXEL_MEAN [123.675, 116.28, 103.53], MODEL.PIXEL_STD
[58.395, 57.12, 57.375], and the stride in the 3x3 convolution (MODEL.RESNETS.STRIDE_IN_1X1
False), as the R50/R101 configs set.
"""

import argparse
import pickle
import re
import sys
from typing import Callable, Dict, Mapping

import numpy as np
import torch

# torchvision name (without the parameter suffix) -> detectron2 name
_RULES = (
    (re.compile(r"^conv1$"), r"stem.conv1"),
    (re.compile(r"^bn1$"), r"stem.conv1.norm"),
    (re.compile(r"^layer(\d+)\.(\d+)\.conv(\d+)$"), r"res{0}.\2.conv\3"),
    (re.compile(r"^layer(\d+)\.(\d+)\.bn(\d+)$"), r"res{0}.\2.conv\3.norm"),
    (re.compile(r"^layer(\d+)\.(\d+)\.downsample\.0$"), r"res{0}.\2.shortcut"),
    (re.compile(r"^layer(\d+)\.(\d+)\.downsample\.1$"), r"res{0}.\2.shortcut.norm"),
)
_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
# the ImageNet classifier, and BatchNorm's count of training batches (not a weight)
_DROPPED = re.compile(r"^fc\.|\.num_batches_tracked$")


def convert_name(name: str) -> str:
    """detectron2's name for the torchvision ResNet parameter or buffer ``name``.

    Raises:
        KeyError: ``name`` is not a torchvision ResNet name.
    """
    module, _, suffix = name.rpartition(".")
    if suffix in _SUFFIXES:
        for pattern, template in _RULES:
            match = pattern.match(module)
            if match:
                # torchvision's layer1..layer4 are detectron2's res2..res5
                stage = int(match.group(1)) + 1 if match.groups() else 0
                return f"{match.expand(template.format(stage))}.{suffix}"
    raise KeyError(f"{name!r} is not a parameter name of a torchvision ResNet")


def convert_torchvision_resnet(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """Rename a torchvision ResNet state dict to detectron2's ResNet names (numpy values)."""
    return {
        convert_name(k): v.detach().cpu().numpy()
        for k, v in state_dict.items()
        if not _DROPPED.search(k)
    }


def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The state dict in ``path``: a bare one, or under "model" / "state_dict"."""
    obj = torch.load(path, map_location="cpu")
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError("not a state dict (a mapping of names to tensors)")
    return dict(obj)


def save_d2_checkpoint(path: str, weights: Dict[str, np.ndarray], author: str) -> None:
    """Write ``weights`` in detectron2's model-zoo pickle format, to be matched by name suffix."""
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": author, "matching_heuristics": True}, f)


def converter_main(
    argv,
    doc: str,
    convert: Callable[[Dict[str, torch.Tensor]], Dict[str, np.ndarray]],
    author: str,
    input_help: str,
) -> int:
    """Command line of a converter: ``convert`` the state dict of the input file, write the
    output pickle; bad input is one ``parser.error`` line naming the file."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    args = parser.parse_args(argv)
    if not args.output.endswith(".pkl"):
        parser.error(f"output {args.output!r} must end in .pkl (detectron2 reads it as a pickle)")
    try:
        weights = convert(load_state_dict(args.input))
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as e:
        parser.error(f"{args.input}: {e.args[0] if isinstance(e, KeyError) else e}")
    save_d2_checkpoint(args.output, weights, author)
    print(f"Wrote {len(weights)} tensors to {args.output}")
    return 0


def main(argv=None) -> int:
    return converter_main(
        argv, __doc__, convert_torchvision_resnet, "torchvision", "torchvision state dict (.pth)"
    )


if __name__ == "__main__":
    sys.exit(main())
