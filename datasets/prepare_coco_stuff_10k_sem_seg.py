#!/usr/bin/env python
"""
Prepare COCO-Stuff-10k (cocostuff-10k-v1.1) for 171-class semantic segmentation.

Reads   coco/coco_stuff_10k/images/*.jpg
        coco/coco_stuff_10k/annotations/*.mat   (key "S": COCO-Stuff ids 1..182, 0 = unlabeled)
        coco/coco_stuff_10k/imageLists/{train,test}.txt   (one image name per line)
Writes  coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg
        coco/coco_stuff_10k/annotations_detectron2/{train,test}/*.png
            (uint8 train ids in [0, 171): the order of the coco_stuff_171 table; 255 = ignore,
            for unlabeled pixels and the 11 COCO ids without a class)

    python -m datasets.prepare_coco_stuff_10k_sem_seg [--root DIR] [--workers N]
"""
import os
import shutil
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from .prepare_common import load_metadata_table, make_parser, parallel_map, require, run_main

IGNORE_LABEL = 255


def coco_stuff_lut() -> np.ndarray:
    """(256,) uint8: COCO-Stuff id -> train id, IGNORE_LABEL for ids without a class."""
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for train_id, cat in enumerate(load_metadata_table("coco_stuff_171")):
        lut[cat["id"]] = train_id
    return lut


def _convert(task: Tuple[str, str, str, str, np.ndarray]) -> None:
    from scipy.io import loadmat

    image_src, mat_src, image_dst, label_dst, lut = task
    labels = loadmat(mat_src)["S"]
    if labels.ndim != 2 or int(labels.max()) > 255 or int(labels.min()) < 0:
        raise ValueError(f"{mat_src}: expected a 2-D label map 'S' with ids in [0, 182]")
    Image.fromarray(lut[labels.astype(np.int64)]).save(label_dst)
    shutil.copyfile(image_src, image_dst)


def convert_split(root: str, split: str, workers: int, lut: np.ndarray) -> int:
    base = os.path.join(root, "coco", "coco_stuff_10k")
    list_file = os.path.join(base, "imageLists", f"{split}.txt")
    require(list_file, "COCO-Stuff-10k image list", kind="file")
    image_dir = os.path.join(base, "images_detectron2", split)
    label_dir = os.path.join(base, "annotations_detectron2", split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    with open(list_file) as f:
        names = [os.path.splitext(line.strip())[0] for line in f if line.strip()]
    tasks = []
    for name in names:
        image_src = os.path.join(base, "images", name + ".jpg")
        mat_src = os.path.join(base, "annotations", name + ".mat")
        require(image_src, f"image listed in {list_file}", kind="file")
        require(mat_src, f"annotation listed in {list_file}", kind="file")
        tasks.append((image_src, mat_src, os.path.join(image_dir, name + ".jpg"),
                      os.path.join(label_dir, name + ".png"), lut))
    parallel_map(_convert, tasks, workers)
    return len(tasks)


def main(argv: Optional[List[str]] = None) -> None:
    args = make_parser(__doc__.strip().splitlines()[0]).parse_args(argv)
    lut = coco_stuff_lut()
    for split in ["train", "test"]:
        print(f"{split}: wrote {convert_split(args.root, split, args.workers, lut)} images and label maps")


if __name__ == "__main__":
    run_main(main)
