"""COCO-Stuff-10k semantic segmentation, 171 classes: "coco_2017_{train,test}_stuff_10k_sem_seg"."""
import os

from .builtin_meta import stuff_dataset_id_to_contiguous_id
from .catalog import register_sem_seg_dataset
from .loaders import DatasetSource
from .metadata_tables import load_metadata_table

__all__ = ["register_all_coco_stuff_10k"]

_SOURCE = DatasetSource("COCO-Stuff-10k", "prepare_coco_stuff_10k_sem_seg")


_FOLDER = "coco/coco_stuff_10k"


def register_all_coco_stuff_10k(root: str) -> None:
    categories = load_metadata_table("coco_stuff_171")
    metadata = {
        "stuff_classes": [c["name"] for c in categories],
        "stuff_dataset_id_to_contiguous_id": stuff_dataset_id_to_contiguous_id(categories),
    }
    for split in ("train", "test"):
        image_root = os.path.join(root, _FOLDER, "images_detectron2", split)
        sem_seg_root = os.path.join(root, _FOLDER, "annotations_detectron2", split)
        register_sem_seg_dataset(f"coco_2017_{split}_stuff_10k_sem_seg", image_root, sem_seg_root, _SOURCE, metadata)
