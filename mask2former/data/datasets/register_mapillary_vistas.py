"""
Mapillary Vistas v1.2 semantic segmentation: 65 classes, label 65 ("Unlabeled") ignored.

Registered as "mapillary_vistas_sem_seg_{train,val}"; the release's folders are used as they
are (no preparation script).
"""
import os

from .catalog import register_sem_seg_dataset
from .loaders import DatasetSource
from .metadata_tables import load_metadata_table
from .register_mapillary_vistas_panoptic import IGNORE_LABEL

__all__ = ["register_all_mapillary_vistas"]

_SOURCE = DatasetSource("Mapillary Vistas v1.2")


def register_all_mapillary_vistas(root: str) -> None:
    categories = load_metadata_table("mapillary_vistas_65")
    metadata = {"stuff_classes": [c["name"] for c in categories], "stuff_colors": [c["color"] for c in categories]}
    for split, dirname in [("train", "training"), ("val", "validation")]:
        split_dir = os.path.join(root, "mapillary_vistas", dirname)
        register_sem_seg_dataset(
            f"mapillary_vistas_sem_seg_{split}",
            os.path.join(split_dir, "images"),
            os.path.join(split_dir, "labels"),
            _SOURCE,
            metadata,
            ignore_label=IGNORE_LABEL,
        )
