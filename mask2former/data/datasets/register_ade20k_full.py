"""
ADE20K-Full semantic segmentation, 847 classes: "ade20k_full_sem_seg_{train,val}".

847 classes do not fit in uint8: datasets/prepare_ade20k_full_sem_seg.py writes uint16 TIFF
labels, 65535 = ignore.
"""
import os

from .catalog import register_sem_seg_dataset
from .loaders import DatasetSource
from .metadata_tables import load_metadata_table

__all__ = ["register_all_ade20k_full"]

_SOURCE = DatasetSource("ADE20K-Full semantic", "prepare_ade20k_full_sem_seg")


def register_all_ade20k_full(root: str) -> None:
    metadata = {"stuff_classes": [c["name"] for c in load_metadata_table("ade20k_full_847")]}
    for split, dirname in [("train", "training"), ("val", "validation")]:
        folder = os.path.join(root, "ADE20K_2021_17_01")
        register_sem_seg_dataset(
            f"ade20k_full_sem_seg_{split}",
            os.path.join(folder, "images_detectron2", dirname),
            os.path.join(folder, "annotations_detectron2", dirname),
            _SOURCE,
            metadata,
            gt_ext="tif",
            ignore_label=65535,
        )
