#!/usr/bin/env python
"""
Shift the ADE20K (SceneParsing, 150 classes) labels for detectron2.

Reads   ADEChallengeData2016/annotations/{training,validation}/*.png   (0 = other, 1..150)
Writes  ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
        (uint8, class c -> c - 1 in [0, 150), "other" 0 -> 255 = ignore)

    python -m datasets.prepare_ade20k_sem_seg [--root DIR] [--workers N]
"""
import os
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from .prepare_common import list_files, make_parser, parallel_map, require, run_main

NUM_CLASSES = 150
IGNORE_LABEL = 255


def shift_labels(label: np.ndarray, where: str = "") -> np.ndarray:
    """(H, W) labels in [0, 150] -> uint8 labels in [0, 150) with 0 mapped to IGNORE_LABEL."""
    if label.ndim != 2:
        raise ValueError(f"{where}: expected a single-channel label map, got shape {label.shape}")
    if label.size and int(label.max()) > NUM_CLASSES:
        raise ValueError(f"{where}: label {int(label.max())} is above the {NUM_CLASSES} ADE20K classes")
    label = label.astype(np.int32)
    return np.where(label == 0, IGNORE_LABEL, label - 1).astype(np.uint8)


def _convert(task: Tuple[str, str]) -> None:
    src, dst = task
    Image.fromarray(shift_labels(np.asarray(Image.open(src)), where=src)).save(dst)


def convert_split(root: str, dirname: str, workers: int) -> int:
    src_dir = os.path.join(root, "ADEChallengeData2016", "annotations", dirname)
    dst_dir = os.path.join(root, "ADEChallengeData2016", "annotations_detectron2", dirname)
    require(src_dir, "ADE20K annotations")
    os.makedirs(dst_dir, exist_ok=True)
    tasks = [(os.path.join(src_dir, f), os.path.join(dst_dir, f)) for f in list_files(src_dir, ".png")]
    parallel_map(_convert, tasks, workers)
    return len(tasks)


def main(argv: Optional[List[str]] = None) -> None:
    args = make_parser(__doc__.strip().splitlines()[0]).parse_args(argv)
    for dirname in ["training", "validation"]:
        n = convert_split(args.root, dirname, args.workers)
        print(f"{dirname}: wrote {n} label maps")


if __name__ == "__main__":
    run_main(main)
