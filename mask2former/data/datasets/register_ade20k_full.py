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


_PREDEFINED_SPLITS = {  # name: (image_root, sem_seg_root), under root
    f"ade20k_full_sem_seg_{split}": (
        f"ADE20K_2021_17_01/images_detectron2/{dirname}",
        f"ADE20K_2021_17_01/annotations_detectron2/{dirname}",
    )
    for split, dirname in [("train", "training"), ("val", "validation")]
}


def register_all_ade20k_full(root: str) -> None:
    metadata = {"stuff_classes": [c["name"] for c in load_metadata_table("ade20k_full_847")]}
    for name, (image_root, sem_seg_root) in _PREDEFINED_SPLITS.items():
        image_root, sem_seg_root = os.path.join(root, image_root), os.path.join(root, sem_seg_root)
        register_sem_seg_dataset(name, image_root, sem_seg_root, _SOURCE, metadata, gt_ext="tif", ignore_label=65535)
