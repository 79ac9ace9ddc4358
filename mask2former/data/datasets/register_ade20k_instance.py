"""
ADE20K instance segmentation, 100 thing classes: "ade20k_instance_{train,val}".

The COCO-format jsons are made by datasets/prepare_ade20k_ins_seg.py; their category ids are
the classes' ADE20K-150 indices. Evaluated for mask AP by detectron2's COCOEvaluator
(evaluator type "coco").
"""
import os
from functools import partial

from .builtin_meta import thing_dataset_id_to_contiguous_id
from .catalog import register_dataset
from .loaders import DatasetSource, load_instance_dicts
from .metadata_tables import load_metadata_table

__all__ = ["register_all_ade20k_instance"]

_SOURCE = DatasetSource("ADE20K instance", "prepare_ade20k_ins_seg")


def register_all_ade20k_instance(root: str) -> None:
    things = [dict(c, isthing=1) for c in load_metadata_table("ade20k_instance_100")]
    metadata = {
        "thing_classes": [c["name"] for c in things],
        "thing_dataset_id_to_contiguous_id": thing_dataset_id_to_contiguous_id(things),
    }
    for split, dirname in [("train", "training"), ("val", "validation")]:
        image_root = os.path.join(root, "ADEChallengeData2016", "images", dirname)
        json_file = os.path.join(root, "ADEChallengeData2016", f"ade20k_instance_{split}.json")
        register_dataset(
            f"ade20k_instance_{split}",
            partial(load_instance_dicts, json_file, image_root, metadata, _SOURCE),
            image_root=image_root,
            json_file=json_file,
            evaluator_type="coco",
            **metadata,
        )
