"""
Mapillary Vistas v1.2: semantic (65 classes, label 65 = unlabeled = ignored) and panoptic.

Both use the release's own folders as they are (no preparation script).
"""
import os
from functools import partial

from .builtin_meta import get_mapillary_vistas_panoptic_metadata, get_mapillary_vistas_semantic_metadata
from .catalog import register_dataset, register_sem_seg_dataset
from .loaders import DatasetSource, load_panoptic_dicts

__all__ = ["register_all_mapillary_vistas"]

_SPLITS = [("train", "training"), ("val", "validation")]
_SOURCE = DatasetSource("Mapillary Vistas v1.2")
_IGNORE_LABEL = 65


def register_all_mapillary_vistas(root: str) -> None:
    sem_meta = get_mapillary_vistas_semantic_metadata()
    pan_meta = get_mapillary_vistas_panoptic_metadata()
    for split, dirname in _SPLITS:
        split_dir = os.path.join(root, "mapillary_vistas", dirname)
        image_dir = os.path.join(split_dir, "images")
        label_dir = os.path.join(split_dir, "labels")
        pan_dir = os.path.join(split_dir, "panoptic")
        pan_json = os.path.join(split_dir, "panoptic", "panoptic_2018.json")

        register_sem_seg_dataset(
            f"mapillary_vistas_sem_seg_{split}", image_dir, label_dir, _SOURCE, sem_meta, ignore_label=_IGNORE_LABEL
        )
        register_dataset(
            f"mapillary_vistas_panoptic_{split}",
            partial(load_panoptic_dicts, pan_json, image_dir, pan_dir, pan_meta, _SOURCE, semseg_dir=label_dir),
            image_root=image_dir,
            panoptic_root=pan_dir,
            panoptic_json=pan_json,
            sem_seg_root=label_dir,
            evaluator_type="mapillary_vistas_panoptic_seg",
            ignore_label=_IGNORE_LABEL,
            label_divisor=1000,
            **pan_meta,
        )
