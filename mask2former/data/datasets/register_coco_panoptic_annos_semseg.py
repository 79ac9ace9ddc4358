"""
COCO panoptic with semantic labels: "coco_2017_{train,val}_panoptic_with_sem_seg".

The same images and panoptic annotations as detectron2's "coco_2017_{train,val}_panoptic"
(which stay as detectron2 registers them), plus "sem_seg_file_name" pointing to the semantic
PNGs of datasets/prepare_coco_semantic_annos_from_panoptic_annos.py, and Mask2Former's
metadata: 80 thing classes, 133 classes in all. The COCO panoptic configs evaluate on these,
for PQ, mask AP and mIoU at once.
"""
import os
from functools import partial
from typing import Any, Dict, List

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .builtin_meta import get_panoptic_metadata
from .catalog import register_panoptic_dataset
from .loaders import DatasetSource, load_panoptic_dicts

__all__ = [
    "get_metadata",
    "load_coco_panoptic_json",
    "register_coco_panoptic_annos_sem_seg",
    "register_all_coco_panoptic_annos_sem_seg",
]

_SOURCE = DatasetSource(
    "COCO panoptic with semantic annotations", "prepare_coco_semantic_annos_from_panoptic_annos"
)

# detectron2's panoptic name: (image_root, panoptic_root, panoptic_json, sem_seg_root, instances_json)
_PREDEFINED_SPLITS = {
    f"coco_2017_{split}_panoptic": (
        f"coco/{split}2017",
        f"coco/panoptic_{split}2017",
        f"coco/annotations/panoptic_{split}2017.json",
        f"coco/panoptic_semseg_{split}2017",
        f"coco/annotations/instances_{split}2017.json",
    )
    for split in ("train", "val")
}


def get_metadata() -> Dict[str, Any]:
    """COCO panoptic, 133 classes (80 things first, then 53 stuff), from detectron2's table."""
    return get_panoptic_metadata(COCO_CATEGORIES)


def load_coco_panoptic_json(
    json_file: str, image_dir: str, gt_dir: str, semseg_dir: str, meta: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """Dataset dicts of a COCO panoptic split with semantic labels; see :func:`loaders.load_panoptic_dicts`."""
    return load_panoptic_dicts(json_file, image_dir, gt_dir, meta, _SOURCE, semseg_dir=semseg_dir)


def register_coco_panoptic_annos_sem_seg(
    name: str, metadata: Dict[str, Any], image_root: str, panoptic_root: str, panoptic_json: str,
    sem_seg_root: str, instances_json: str,
) -> None:
    """
    Register ``name + "_with_sem_seg"`` (``name`` is detectron2's panoptic name, e.g.
    "coco_2017_val_panoptic", whose own registration is left as it is).
    """
    loader = partial(load_coco_panoptic_json, panoptic_json, image_root, panoptic_root, sem_seg_root, metadata)
    register_panoptic_dataset(
        name + "_with_sem_seg", loader, metadata, image_root, panoptic_root, sem_seg_root, panoptic_json,
        instances_json, "coco_panoptic_seg",
    )


def register_all_coco_panoptic_annos_sem_seg(root: str) -> None:
    metadata = get_metadata()
    for name, paths in _PREDEFINED_SPLITS.items():
        register_coco_panoptic_annos_sem_seg(name, metadata, *(os.path.join(root, p) for p in paths))
