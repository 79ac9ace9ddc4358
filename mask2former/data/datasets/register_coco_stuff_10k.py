"""COCO-Stuff-10k semantic segmentation, 171 classes: "coco_2017_{train,test}_stuff_10k_sem_seg"."""
import os

from .builtin_meta import stuff_dataset_id_to_contiguous_id
from .catalog import register_sem_seg_dataset
from .loaders import DatasetSource
from .metadata_tables import load_metadata_table

__all__ = ["register_all_coco_stuff_10k"]

_SOURCE = DatasetSource("COCO-Stuff-10k", "prepare_coco_stuff_10k_sem_seg")


def register_all_coco_stuff_10k(root: str) -> None:
    categories = load_metadata_table("coco_stuff_171")
    metadata = {
        "stuff_classes": [c["name"] for c in categories],
        "stuff_dataset_id_to_contiguous_id": stuff_dataset_id_to_contiguous_id(categories),
    }
    for split in ("train", "test"):
        folder = os.path.join(root, "coco", "coco_stuff_10k")
        register_sem_seg_dataset(
            f"coco_2017_{split}_stuff_10k_sem_seg",
            os.path.join(folder, "images_detectron2", split),
            os.path.join(folder, "annotations_detectron2", split),
            _SOURCE,
            metadata,
        )
