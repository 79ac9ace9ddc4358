#!/usr/bin/env python
"""
Make COCO semantic label maps from the COCO panoptic annotations.

Reads   coco/annotations/panoptic_{split}.json and coco/panoptic_{split}/*.png
Writes  coco/panoptic_semseg_{split}/*.png: uint8, pixel = contiguous class id in
        [0, 133) (the order of detectron2's COCO_CATEGORIES: 80 things, then 53 stuff),
        255 = no segment (void).

These are the "sem_seg_file_name" of "coco_2017_{train,val}_panoptic_with_sem_seg".

    python -m datasets.prepare_coco_semantic_annos_from_panoptic_annos [--root DIR] [--workers N]
"""
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .prepare_common import make_parser, parallel_map, require, rgb2id, run_main

IGNORE_LABEL = 255


def coco_id_map() -> Dict[int, int]:
    """COCO panoptic category id -> contiguous id, as the registered metadata defines it."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return {cat["id"]: i for i, cat in enumerate(COCO_CATEGORIES)}


def panoptic_to_semantic(
    panoptic_rgb: np.ndarray, segments_info: List[Dict[str, Any]], id_map: Dict[int, int], where: str = ""
) -> np.ndarray:
    """
    Args:
        panoptic_rgb: (H, W, 3) uint8 panoptic PNG.
        segments_info: the json's segments for this image ("id", "category_id").
        id_map: dataset category id -> contiguous id.

    Returns:
        (H, W) uint8 semantic map, IGNORE_LABEL where no segment is.
    """
    ids = rgb2id(panoptic_rgb)
    out = np.full(ids.shape, IGNORE_LABEL, dtype=np.uint8)
    for seg in segments_info:
        cat = seg["category_id"]
        if cat not in id_map:
            raise ValueError(f"{where}: segment {seg['id']} has unknown category_id {cat}")
        out[ids == seg["id"]] = id_map[cat]
    return out


def _convert(task: Tuple[str, str, List[Dict[str, Any]], Dict[int, int]]) -> None:
    pan_path, out_path, segments_info, id_map = task
    rgb = np.asarray(Image.open(pan_path).convert("RGB"))
    Image.fromarray(panoptic_to_semantic(rgb, segments_info, id_map, where=pan_path)).save(out_path)


def convert_split(root: str, split: str, workers: int, id_map: Dict[int, int]) -> int:
    """Convert one split (e.g. "val2017"); returns the number of label maps written."""
    json_file = os.path.join(root, "coco", "annotations", f"panoptic_{split}.json")
    pan_dir = os.path.join(root, "coco", f"panoptic_{split}")
    out_dir = os.path.join(root, "coco", f"panoptic_semseg_{split}")
    require(json_file, "COCO panoptic json", kind="file")
    require(pan_dir, "COCO panoptic PNG folder")
    os.makedirs(out_dir, exist_ok=True)
    with open(json_file) as f:
        annotations = json.load(f)["annotations"]
    tasks = []
    for ann in annotations:
        pan_path = os.path.join(pan_dir, ann["file_name"])
        require(pan_path, f"panoptic PNG listed in {json_file}", kind="file")
        tasks.append((pan_path, os.path.join(out_dir, ann["file_name"]), ann["segments_info"], id_map))
    parallel_map(_convert, tasks, workers)
    return len(tasks)


def main(argv: Optional[List[str]] = None) -> None:
    parser = make_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--splits", nargs="+", default=["train2017", "val2017"])
    args = parser.parse_args(argv)
    id_map = coco_id_map()
    for split in args.splits:
        n = convert_split(args.root, split, args.workers, id_map)
        out_dir = os.path.join(args.root, "coco", f"panoptic_semseg_{split}")
        print(f"{split}: wrote {n} semantic label maps to {out_dir}")


if __name__ == "__main__":
    run_main(main)
