#!/usr/bin/env python
"""
Make ADE20K panoptic annotations (COCO panoptic format, 150 classes, 100 things).

Reads   ADEChallengeData2016/images/{training,validation}/*.jpg
        ADEChallengeData2016/annotations/{training,validation}/*.png          (semantic, 0..150)
        ADEChallengeData2016/annotations_instance/{training,validation}/*.png (see
            prepare_ade20k_ins_seg for their format and --category-mapping)
Writes  ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png  (segment id = R + 256 G + 256^2 B)
        ADEChallengeData2016/ade20k_panoptic_{train,val}.json   (category ids = 0-based
            ADE20K-150 class index; image ids shared with the instance json)

Stuff segments come from the semantic maps (one segment per stuff class present); thing
segments from the instance maps, which take precedence where the two overlap. Pixels of thing
classes that no instance covers stay void (0).

The registered "ade20k_panoptic_*" datasets also need the semantic maps of
datasets/prepare_ade20k_sem_seg.py and the instance json of datasets/prepare_ade20k_ins_seg.py.

    python -m datasets.prepare_ade20k_pan_seg [--root DIR] [--workers N] [--category-mapping FILE]
"""
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .prepare_ade20k_ins_seg import ADE, DEFAULT_CATEGORY_MAPPING, SPLITS, instance_class_map, read_instances
from .prepare_common import (
    bbox_xywh,
    id2rgb,
    image_ids_from_stems,
    list_files,
    load_metadata_table,
    make_parser,
    parallel_map,
    require,
    run_main,
)


def make_panoptic(
    semantic: np.ndarray, instances: List[Tuple[np.ndarray, int]], isthing: List[int]
) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """
    Args:
        semantic: (H, W) raw ADE20K labels, 0 = other, c in 1..150 = class c - 1.
        instances: (mask (H, W) bool, 0-based class index) per thing instance.
        isthing: per 0-based class index, 1 for thing classes.

    Returns:
        (H, W) int32 segment ids (0 = void) and the COCO-panoptic "segments_info".
    """
    pan = np.zeros(semantic.shape, dtype=np.int32)
    categories = {}
    for c in np.unique(semantic):
        if c == 0 or isthing[c - 1]:
            continue
        seg_id = len(categories) + 1
        pan[semantic == c] = seg_id
        categories[seg_id] = int(c - 1)
    for mask, cat in instances:
        seg_id = len(categories) + 1
        pan[mask] = seg_id
        categories[seg_id] = cat
    segments_info = []
    for seg_id, cat in categories.items():
        mask = pan == seg_id
        if not mask.any():  # a stuff region fully covered by instances
            continue
        segments_info.append(
            {
                "id": seg_id,
                "category_id": cat,
                "iscrowd": 0,
                "isthing": int(isthing[cat]),
                "area": int(mask.sum()),
                "bbox": bbox_xywh(mask),
            }
        )
    return pan, segments_info


def _convert(task) -> Tuple[List[Dict[str, Any]], Tuple[int, int]]:
    sem_path, inst_path, out_path, class_map, isthing = task
    semantic = np.asarray(Image.open(sem_path))
    if semantic.ndim != 2 or (semantic.size and int(semantic.max()) > len(isthing)):
        raise ValueError(f"{sem_path}: expected raw ADE20K labels in [0, {len(isthing)}]")
    instances = read_instances(inst_path, class_map)
    pan, segments_info = make_panoptic(semantic, instances, isthing)
    Image.fromarray(id2rgb(pan)).save(out_path)
    return segments_info, semantic.shape


def convert_split(root: str, split: str, dirname: str, workers: int, class_map: Dict[int, int]) -> str:
    image_dir = os.path.join(root, ADE, "images", dirname)
    sem_dir = os.path.join(root, ADE, "annotations", dirname)
    inst_dir = os.path.join(root, ADE, "annotations_instance", dirname)
    out_dir = os.path.join(root, ADE, f"ade20k_panoptic_{split}")
    for path, what in [(image_dir, "ADE20K images"), (sem_dir, "ADE20K annotations"),
                       (inst_dir, "ADE20K instance annotations (annotations_instance)")]:
        require(path, what)
    os.makedirs(out_dir, exist_ok=True)
    table = load_metadata_table("ade20k_150")
    isthing = [c["isthing"] for c in table]

    stems = [os.path.splitext(f)[0] for f in list_files(image_dir, ".jpg")]
    for s in stems:
        require(os.path.join(sem_dir, s + ".png"), f"semantic annotation of {s}", kind="file")
        require(os.path.join(inst_dir, s + ".png"), f"instance annotation of {s}", kind="file")
    ids = image_ids_from_stems(stems)
    tasks = [
        (os.path.join(sem_dir, s + ".png"), os.path.join(inst_dir, s + ".png"),
         os.path.join(out_dir, s + ".png"), class_map, isthing)
        for s in stems
    ]
    results = parallel_map(_convert, tasks, workers)

    images, annotations = [], []
    for s, (segments_info, (h, w)) in zip(stems, results):
        images.append({"id": ids[s], "file_name": s + ".jpg", "height": int(h), "width": int(w)})
        annotations.append({"image_id": ids[s], "file_name": s + ".png", "segments_info": segments_info})
    categories = [
        {"id": c["id"], "name": c["name"], "isthing": c["isthing"], "color": c["color"]} for c in table
    ]
    out_file = os.path.join(root, ADE, f"ade20k_panoptic_{split}.json")
    with open(out_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    print(f"{split}: {len(images)} panoptic annotations -> {out_file}")
    return out_file


def main(argv: Optional[List[str]] = None) -> None:
    parser = make_parser(__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--category-mapping", default=DEFAULT_CATEGORY_MAPPING, help="ade20k_instance_catid_mapping.txt"
    )
    args = parser.parse_args(argv)
    class_map = instance_class_map(args.category_mapping)
    for split, dirname in SPLITS:
        convert_split(args.root, split, dirname, args.workers, class_map)


if __name__ == "__main__":
    run_main(main)
