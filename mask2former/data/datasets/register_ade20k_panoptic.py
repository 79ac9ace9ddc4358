"""
ADE20K panoptic segmentation: 150 classes (100 things), made by datasets/prepare_ade20k_pan_seg.py.

Registered as "ade20k_panoptic_{train,val}", evaluator type "ade20k_panoptic_seg" (PQ, and
mIoU / instance AP when the model produces them).
"""
import os
from functools import partial
from typing import Any, Dict, List, Optional

from .builtin_meta import get_panoptic_metadata
from .catalog import register_panoptic_dataset
from .loaders import DatasetSource, load_panoptic_dicts
from .metadata_tables import load_metadata_table

__all__ = ["get_metadata", "load_ade20k_panoptic_json", "register_ade20k_panoptic", "register_all_ade20k_panoptic"]

_SOURCE = DatasetSource("ADE20K panoptic", "prepare_ade20k_pan_seg (after prepare_ade20k_sem_seg)")

# name: (image_root, panoptic_root, semantic_root, panoptic_json, instances_json), under root
_PREDEFINED_SPLITS = {
    f"ade20k_panoptic_{split}": (
        f"ADEChallengeData2016/images/{dirname}",
        f"ADEChallengeData2016/ade20k_panoptic_{split}",
        f"ADEChallengeData2016/annotations_detectron2/{dirname}",
        f"ADEChallengeData2016/ade20k_panoptic_{split}.json",
        f"ADEChallengeData2016/ade20k_instance_{split}.json",
    )
    for split, dirname in [("train", "training"), ("val", "validation")]
}


def get_metadata() -> Dict[str, Any]:
    """ADE20K panoptic metadata: 150 classes, 100 things; dataset ids = ADE20K-150 indices."""
    return get_panoptic_metadata(load_metadata_table("ade20k_150"))


def load_ade20k_panoptic_json(
    json_file: str, image_dir: str, gt_dir: str, semseg_dir: str, meta: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """Dataset dicts of an ADE20K panoptic split; see :func:`loaders.load_panoptic_dicts`."""
    return load_panoptic_dicts(json_file, image_dir, gt_dir, meta, _SOURCE, semseg_dir=semseg_dir)


def register_ade20k_panoptic(
    name: str, metadata: Dict[str, Any], image_root: str, panoptic_root: str, semantic_root: str,
    panoptic_json: str, instances_json: Optional[str] = None,
) -> None:
    """Register ``name``; ``instances_json`` lets a panoptic model also be evaluated for AP."""
    loader = partial(load_ade20k_panoptic_json, panoptic_json, image_root, panoptic_root, semantic_root, metadata)
    register_panoptic_dataset(
        name, loader, metadata, image_root, panoptic_root, semantic_root, panoptic_json, instances_json,
        "ade20k_panoptic_seg",
    )


def register_all_ade20k_panoptic(root: str) -> None:
    metadata = get_metadata()
    for name, paths in _PREDEFINED_SPLITS.items():
        register_ade20k_panoptic(name, metadata, *(os.path.join(root, p) for p in paths))
