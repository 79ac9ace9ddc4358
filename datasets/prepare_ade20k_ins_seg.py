#!/usr/bin/env python
"""
Make the ADE20K instance segmentation json (COCO format, 100 thing classes).

Reads   ADEChallengeData2016/images/{training,validation}/*.jpg
        ADEChallengeData2016/annotations_instance/{training,validation}/*.png
            (the ADE20K instance-segmentation challenge annotations: R channel = instance
            class in [1, 100], G channel = instance index within the image, 0 = none)
Writes  ADEChallengeData2016/ade20k_instance_{train,val}.json
            category ids = the 0-based ADE20K-150 class index of each thing class (as in the
            registered metadata); masks as RLE; image ids shared with the panoptic json.

The instance classes 1..100 are taken to be the 100 thing classes of the ADE20K-150 table in
their table order; pass --category-mapping to read the correspondence instead from a text file
whose lines start with two integers "<instance class> <ADE20K-150 class, 1-based>" (lines that
do not are skipped), such as the challenge kit's category mapping.

    python datasets/prepare_ade20k_ins_seg.py [--root DIR] [--workers N] [--category-mapping FILE]
"""
import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_common import (  # noqa: E402
    bbox_xywh,
    image_ids_from_stems,
    list_files,
    load_metadata_table,
    make_parser,
    parallel_map,
    require,
    run_main,
)

ADE = "ADEChallengeData2016"
SPLITS = [("train", "training"), ("val", "validation")]


def instance_class_map(mapping_file: Optional[str] = None) -> Dict[int, int]:
    """Instance-challenge class (1..100) -> 0-based ADE20K-150 class index."""
    if mapping_file is None:
        things = [c["id"] for c in load_metadata_table("ade20k_150") if c["isthing"]]
        return {k + 1: cid for k, cid in enumerate(things)}
    out = {}
    with open(mapping_file) as f:
        for line in f:
            fields = line.replace(",", " ").split()
            if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
                out[int(fields[0])] = int(fields[1]) - 1
    if not out:
        raise ValueError(f"{mapping_file}: no '<instance class> <ADE20K-150 class>' lines found")
    return out


def read_instances(path: str, class_map: Dict[int, int]) -> List[Tuple[np.ndarray, int]]:
    """
    Returns:
        (mask (H, W) bool, ADE20K-150 class index) for each instance of the annotation PNG.
    """
    ann = np.asarray(Image.open(path).convert("RGB"))
    classes, instances = ann[..., 0], ann[..., 1]
    out = []
    for inst in np.unique(instances):
        if inst == 0:
            continue
        mask = instances == inst
        values, counts = np.unique(classes[mask], return_counts=True)
        keep = values != 0
        if not keep.any():
            continue
        # An instance should have one class; take the majority if annotation noise splits it.
        cls = int(values[keep][np.argmax(counts[keep])])
        if cls not in class_map:
            raise ValueError(f"{path}: instance {inst} has class {cls}, which the class mapping lacks")
        out.append((mask, class_map[cls]))
    return out


def _annotate(task: Tuple[str, int, Dict[int, int]]) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    from pycocotools import mask as mask_util

    path, image_id, class_map = task
    instances = read_instances(path, class_map)
    height, width = Image.open(path).size[::-1]
    anns = []
    for mask, cat in instances:
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append(
            {
                "image_id": image_id,
                "category_id": cat,
                "segmentation": rle,
                "area": int(mask.sum()),
                "bbox": bbox_xywh(mask),
                "iscrowd": 0,
            }
        )
    return {"height": height, "width": width}, anns


def convert_split(root: str, split: str, dirname: str, workers: int, class_map: Dict[int, int]) -> str:
    image_dir = os.path.join(root, ADE, "images", dirname)
    inst_dir = os.path.join(root, ADE, "annotations_instance", dirname)
    require(image_dir, "ADE20K images")
    require(inst_dir, "ADE20K instance annotations (annotations_instance)")
    stems = [os.path.splitext(f)[0] for f in list_files(image_dir, ".jpg")]
    stems = [s for s in stems if os.path.isfile(os.path.join(inst_dir, s + ".png"))]
    ids = image_ids_from_stems(stems)
    results = parallel_map(_annotate, [(os.path.join(inst_dir, s + ".png"), ids[s], class_map) for s in stems], workers)

    table = {c["id"]: c for c in load_metadata_table("ade20k_150")}
    images, annotations = [], []
    for stem, (size, anns) in zip(stems, results):
        images.append({"id": ids[stem], "file_name": stem + ".jpg", **size})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, **ann})
    categories = [
        {"id": cid, "name": table[cid]["name"]} for cid in sorted(set(class_map.values()))
    ]
    out_file = os.path.join(root, ADE, f"ade20k_instance_{split}.json")
    with open(out_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    print(f"{split}: {len(images)} images, {len(annotations)} instances -> {out_file}")
    return out_file


def main(argv: Optional[List[str]] = None) -> None:
    parser = make_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--category-mapping", default=None, help="instance class -> ADE20K-150 class file")
    args = parser.parse_args(argv)
    class_map = instance_class_map(args.category_mapping)
    for split, dirname in SPLITS:
        convert_split(args.root, split, dirname, args.workers, class_map)


if __name__ == "__main__":
    run_main(main)
