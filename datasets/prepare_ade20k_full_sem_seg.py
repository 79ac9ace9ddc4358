#!/usr/bin/env python
"""
Prepare ADE20K-Full (the ADE20K_2021_17_01 release) for 847-class semantic segmentation.

Reads   ADE20K_2021_17_01/images/ADE/{training,validation}/**/<name>.jpg and <name>_seg.png
            (class of a pixel = R / 10 * 256 + G, 0 = unlabeled)
        ADE20K_2021_17_01/index_ade20k.pkl (optional: its "objectnames" give class names)
Writes  ADE20K_2021_17_01/images_detectron2/{training,validation}/<name>.jpg
        ADE20K_2021_17_01/annotations_detectron2/{training,validation}/<name>.tif
            (uint16 train ids, 65535 = ignore)
        ADE20K_2021_17_01/ade20k_full_categories.json
            ([{"id": train id, "name", "raw_id", "train_images"}], the names of the classes)

The classes are the 847 of the published table (mask2former's "ade20k_full_847" table, the
registered metadata): a pixel of value v (0 = unlabeled) is ADE20K object id v - 1, written as
that class's "trainId", or 65535 if the class is not in the table. --classes-from-data selects
instead the classes present in both the training and the validation split, most frequent first
(by number of training images); with it, --categories FILE imposes a class order: a json list of
{"name": ...} in train-id order, names as in index_ade20k.pkl's "objectnames".

    python -m datasets.prepare_ade20k_full_sem_seg [--root DIR] [--workers N] [--max-short-side N]
        [--classes-from-data [--categories FILE]]
"""
import json
import os
import pickle
import shutil
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .prepare_common import load_metadata_table, make_parser, parallel_map, require, run_main

FULL = "ADE20K_2021_17_01"
SPLITS = ["training", "validation"]
IGNORE_LABEL = 65535
EXPECTED_NUM_CLASSES = 847


def decode_classes(seg_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 ADE20K "_seg.png" -> (H, W) int32 raw class ids (0 = unlabeled)."""
    seg = seg_rgb.astype(np.int32)
    return seg[..., 0] // 10 * 256 + seg[..., 1]


def find_samples(split_dir: str) -> List[Tuple[str, str]]:
    """(image path, seg path) of every image under ``split_dir`` (recursive), sorted by name."""
    out = []
    for dirpath, _, files in os.walk(split_dir):
        for f in files:
            if f.endswith(".jpg"):
                seg = os.path.join(dirpath, f[: -len(".jpg")] + "_seg.png")
                if os.path.isfile(seg):
                    out.append((os.path.join(dirpath, f), seg))
    return sorted(out, key=lambda p: os.path.basename(p[0]))


def _present(seg_path: str) -> List[int]:
    ids = np.unique(decode_classes(np.asarray(Image.open(seg_path).convert("RGB"))))
    return [int(i) for i in ids if i != 0]


def _convert(task) -> None:
    image_path, seg_path, image_out, label_out, lut, max_short_side = task
    raw = decode_classes(np.asarray(Image.open(seg_path).convert("RGB")))
    raw = np.where(raw < len(lut), raw, 0)
    label = Image.fromarray(lut[raw].astype(np.uint16))
    h, w = raw.shape
    if max_short_side and min(h, w) > max_short_side:
        scale = max_short_side / min(h, w)
        size = (round(w * scale), round(h * scale))
        Image.open(image_path).convert("RGB").resize(size, Image.BILINEAR).save(image_out, quality=95)
        label = label.resize(size, Image.NEAREST)
    else:
        shutil.copyfile(image_path, image_out)
    label.save(label_out)


def load_object_names(root: str) -> Dict[int, str]:
    """Raw class id -> name from index_ade20k.pkl, or {} if it is absent."""
    path = os.path.join(root, FULL, "index_ade20k.pkl")
    if not os.path.isfile(path):
        return {}
    with open(path, "rb") as f:
        index = pickle.load(f)
    # mask value v is objectnames[v - 1] (0 is "unlabeled")
    return {i + 1: str(name) for i, name in enumerate(index["objectnames"])}


def select_classes(
    counts: Dict[str, Counter], names: Dict[int, str], categories_file: Optional[str]
) -> List[Dict]:
    if categories_file is not None:
        with open(categories_file) as f:
            wanted = [c["name"] for c in json.load(f)]
        by_name = {n: i for i, n in names.items()}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ValueError(f"{categories_file}: {len(missing)} names not in objectnames, e.g. {missing[:3]}")
        raw_ids = [by_name[n] for n in wanted]
    else:
        both = set(counts["training"]) & set(counts["validation"])
        raw_ids = sorted(both, key=lambda i: (-counts["training"][i], i))
    return [
        {"id": t, "name": names.get(r, f"raw_{r}"), "raw_id": r, "train_images": counts["training"][r]}
        for t, r in enumerate(raw_ids)
    ]


def published_classes() -> List[Dict]:
    """The published 847 classes: train id, name and pixel value ("raw_id" = ADE20K object id + 1)."""
    table = load_metadata_table("ade20k_full_847")
    if [c["trainId"] for c in table] != list(range(len(table))):
        raise ValueError("the ade20k_full_847 table must list its classes in trainId order")
    return [{"id": c["trainId"], "name": c["name"], "raw_id": c["id"] + 1} for c in table]


def main(argv: Optional[List[str]] = None) -> None:
    parser = make_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--max-short-side", type=int, default=0, help="downscale larger images (0: keep)")
    parser.add_argument("--classes-from-data", action="store_true", help="classes of both splits, not the table")
    parser.add_argument("--categories", default=None, help="with --classes-from-data: json list of class names")
    args = parser.parse_args(argv)

    samples, counts = {}, {}
    for split in SPLITS:
        split_dir = os.path.join(args.root, FULL, "images", "ADE", split)
        require(split_dir, "ADE20K-Full images")
        samples[split] = find_samples(split_dir)
        if not samples[split]:
            raise FileNotFoundError(f"no <name>.jpg with <name>_seg.png under {split_dir}")
        present = parallel_map(_present, [seg for _, seg in samples[split]], args.workers)
        counts[split] = Counter(c for ids in present for c in ids)

    if args.classes_from_data:
        categories = select_classes(counts, load_object_names(args.root), args.categories)
    else:
        categories = [dict(c, train_images=counts["training"][c["raw_id"]]) for c in published_classes()]
    if len(categories) != EXPECTED_NUM_CLASSES:
        print(f"note: {len(categories)} classes selected (the full release gives {EXPECTED_NUM_CLASSES})")
    raw_ids = set(counts["training"]) | set(counts["validation"]) | {c["raw_id"] for c in categories}
    lut = np.full(max(raw_ids, default=0) + 1, IGNORE_LABEL, dtype=np.int64)
    for c in categories:
        lut[c["raw_id"]] = c["id"]
    with open(os.path.join(args.root, FULL, "ade20k_full_categories.json"), "w") as f:
        json.dump(categories, f, indent=0)

    for split in SPLITS:
        image_dir = os.path.join(args.root, FULL, "images_detectron2", split)
        label_dir = os.path.join(args.root, FULL, "annotations_detectron2", split)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        tasks = []
        for image_path, seg_path in samples[split]:
            stem = os.path.splitext(os.path.basename(image_path))[0]
            tasks.append((image_path, seg_path, os.path.join(image_dir, stem + ".jpg"),
                          os.path.join(label_dir, stem + ".tif"), lut, args.max_short_side))
        parallel_map(_convert, tasks, args.workers)
        print(f"{split}: wrote {len(tasks)} images and label maps")


if __name__ == "__main__":
    run_main(main)
