"""
Mapillary Vistas v1.2 panoptic segmentation: 65 classes (37 things), the release's own files.

Registered as "mapillary_vistas_panoptic_{train,val}", evaluator type
"mapillary_vistas_panoptic_seg"; label 65 ("Unlabeled") of the semantic PNGs is ignored.
"""
import os
from functools import partial
from typing import Any, Dict, List, Optional

from .builtin_meta import get_panoptic_metadata
from .catalog import register_panoptic_dataset
from .loaders import DatasetSource, load_panoptic_dicts
from .metadata_tables import load_metadata_table

__all__ = [
    "get_metadata",
    "load_mapillary_vistas_panoptic_json",
    "register_mapillary_vistas_panoptic",
    "register_all_mapillary_vistas_panoptic",
]

_SOURCE = DatasetSource("Mapillary Vistas v1.2")
IGNORE_LABEL = 65

# name: (image_root, panoptic_root, semantic_root, panoptic_json), under root
_PREDEFINED_SPLITS = {
    f"mapillary_vistas_panoptic_{split}": (
        f"mapillary_vistas/{dirname}/images",
        f"mapillary_vistas/{dirname}/panoptic",
        f"mapillary_vistas/{dirname}/labels",
        f"mapillary_vistas/{dirname}/panoptic/panoptic_2018.json",
    )
    for split, dirname in [("train", "training"), ("val", "validation")]
}


def get_metadata() -> Dict[str, Any]:
    """
    Mapillary Vistas panoptic metadata, as published: ``thing_classes`` lists all 65 classes
    (``thing_dataset_id_to_contiguous_id`` only the 37 things); dataset ids are 1..65.
    """
    table = load_metadata_table("mapillary_vistas_65")
    return get_panoptic_metadata(table, all_classes_are_thing_classes=True)


def load_mapillary_vistas_panoptic_json(
    json_file: str, image_dir: str, gt_dir: str, semseg_dir: str, meta: Dict[str, Any]
) -> List[Dict[str, Any]]:
    """Dataset dicts of a Mapillary Vistas panoptic split; see :func:`loaders.load_panoptic_dicts`."""
    return load_panoptic_dicts(json_file, image_dir, gt_dir, meta, _SOURCE, semseg_dir=semseg_dir)


def register_mapillary_vistas_panoptic(
    name: str, metadata: Dict[str, Any], image_root: str, panoptic_root: str, semantic_root: str,
    panoptic_json: str, instances_json: Optional[str] = None,
) -> None:
    loader = partial(load_mapillary_vistas_panoptic_json, panoptic_json, image_root, panoptic_root, semantic_root, metadata)
    register_panoptic_dataset(
        name, loader, metadata, image_root, panoptic_root, semantic_root, panoptic_json, instances_json,
        "mapillary_vistas_panoptic_seg", IGNORE_LABEL,
    )


def register_all_mapillary_vistas_panoptic(root: str) -> None:
    metadata = get_metadata()
    for name, paths in _PREDEFINED_SPLITS.items():
        register_mapillary_vistas_panoptic(name, metadata, *(os.path.join(root, p) for p in paths))
