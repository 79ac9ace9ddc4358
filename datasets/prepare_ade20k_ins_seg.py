#!/usr/bin/env python
"""
Make the ADE20K instance segmentation json (COCO format, 100 thing classes).

Reads   ADEChallengeData2016/images/{training,validation}/*.jpg
        ADEChallengeData2016/annotations_instance/{training,validation}/*.png
            (the ADE20K instance-segmentation challenge annotations: R channel = instance
            class in [1, 100], G channel = instance index within the image, 0 = none)
        ade20k_instance_catid_mapping.txt: header line, then "<instance class> <ADE20K-150
            class, 1-based> <ADE20K-Full class>" per line (the challenge's category mapping)
        ade20k_instance_imgCatIds.json: its "categories" ({"id": instance class, "name"})
            (both files as the original Mask2Former repository ships them in datasets/; by
            default they are read from this folder, see datasets/README.md)
Writes  ADEChallengeData2016/ade20k_instance_{train,val}.json
            category ids = the 0-based ADE20K-150 class index of each instance class (as in the
            registered metadata); masks as RLE; image ids shared with the panoptic json.

    python -m datasets.prepare_ade20k_ins_seg [--root DIR] [--workers N]
        [--category-mapping FILE] [--categories-json FILE]
"""
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .prepare_common import (
    bbox_xywh,
    image_ids_from_stems,
    list_files,
    make_parser,
    parallel_map,
    require,
    run_main,
)

ADE = "ADEChallengeData2016"
SPLITS = [("train", "training"), ("val", "validation")]
_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CATEGORY_MAPPING = os.path.join(_HERE, "ade20k_instance_catid_mapping.txt")
DEFAULT_CATEGORIES_JSON = os.path.join(_HERE, "ade20k_instance_imgCatIds.json")


def instance_class_map(mapping_file: str = DEFAULT_CATEGORY_MAPPING) -> Dict[int, int]:
    """Instance-challenge class (1..100) -> 0-based ADE20K-150 class index, from the mapping file."""
    require(mapping_file, "ADE20K instance category mapping", kind="file")
    out: Dict[int, int] = {}
    with open(mapping_file) as f:
        lines = f.read().splitlines()[1:]  # the first line is the header
    for lineno, line in enumerate(lines, start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or not all(x.isdigit() for x in fields):
            raise ValueError(f"{mapping_file}:{lineno}: expected three integers, got {line!r}")
        instance_class, semantic_class = int(fields[0]), int(fields[1]) - 1
        # a class listed once per ADE20K-Full class it covers: the ADE20K-150 class must agree
        if out.setdefault(instance_class, semantic_class) != semantic_class:
            raise ValueError(
                f"{mapping_file}:{lineno}: instance class {instance_class} maps to ADE20K-150 class "
                f"{semantic_class + 1}, but an earlier line maps it to {out[instance_class] + 1}"
            )
    if not out:
        raise ValueError(f"{mapping_file}: no '<instance class> <ADE20K-150 class> <full class>' lines")
    return out


def instance_categories(categories_json: str, class_map: Dict[int, int]) -> List[Dict[str, Any]]:
    """The json's "categories": the names of ``categories_json`` with ADE20K-150 ids."""
    require(categories_json, "ADE20K instance categories (imgCatIds json)", kind="file")
    with open(categories_json) as f:
        categories = json.load(f).get("categories")
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"{categories_json}: expected a non-empty list under 'categories'")
    missing = [c["id"] for c in categories if c["id"] not in class_map]
    if missing:
        raise ValueError(f"{categories_json}: instance classes {missing} are not in the category mapping")
    return [{"id": class_map[c["id"]], "name": c["name"]} for c in categories]


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


def convert_split(
    root: str, split: str, dirname: str, workers: int, class_map: Dict[int, int], categories: List[Dict[str, Any]]
) -> str:
    image_dir = os.path.join(root, ADE, "images", dirname)
    inst_dir = os.path.join(root, ADE, "annotations_instance", dirname)
    require(image_dir, "ADE20K images")
    require(inst_dir, "ADE20K instance annotations (annotations_instance)")
    stems = [os.path.splitext(f)[0] for f in list_files(image_dir, ".jpg")]
    stems = [s for s in stems if os.path.isfile(os.path.join(inst_dir, s + ".png"))]
    ids = image_ids_from_stems(stems)
    results = parallel_map(_annotate, [(os.path.join(inst_dir, s + ".png"), ids[s], class_map) for s in stems], workers)

    images, annotations = [], []
    for stem, (size, anns) in zip(stems, results):
        images.append({"id": ids[stem], "file_name": stem + ".jpg", **size})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, **ann})
    out_file = os.path.join(root, ADE, f"ade20k_instance_{split}.json")
    with open(out_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    print(f"{split}: {len(images)} images, {len(annotations)} instances -> {out_file}")
    return out_file


def main(argv: Optional[List[str]] = None) -> None:
    parser = make_parser(__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--category-mapping", default=DEFAULT_CATEGORY_MAPPING, help="ade20k_instance_catid_mapping.txt"
    )
    parser.add_argument("--categories-json", default=DEFAULT_CATEGORIES_JSON, help="ade20k_instance_imgCatIds.json")
    args = parser.parse_args(argv)
    class_map = instance_class_map(args.category_mapping)
    categories = instance_categories(args.categories_json, class_map)
    for split, dirname in SPLITS:
        convert_split(args.root, split, dirname, args.workers, class_map, categories)


if __name__ == "__main__":
    run_main(main)
