"""
ADE20K datasets: semantic (150 classes), full (847 classes), panoptic and instance.

"ade20k_sem_seg_{train,val}" is also registered by detectron2; it is re-registered here with
the same class names plus the ADE20K palette, and a loader with clear errors.
"""
import os
from functools import partial

from .builtin_meta import (
    get_ade20k_150_semantic_metadata,
    get_ade20k_full_metadata,
    get_ade20k_instance_metadata,
    get_ade20k_panoptic_metadata,
)
from .catalog import register_dataset, register_sem_seg_dataset
from .loaders import DatasetSource, load_instance_dicts, load_panoptic_dicts

__all__ = [
    "register_all_ade20k_semantic",
    "register_all_ade20k_full",
    "register_all_ade20k_panoptic",
    "register_all_ade20k_instance",
]

_SPLITS = [("train", "training"), ("val", "validation")]
_ADE = "ADEChallengeData2016"
_ADE_FULL = "ADE20K_2021_17_01"

_SEMANTIC = DatasetSource("ADE20K semantic", "prepare_ade20k_sem_seg.py")
_FULL = DatasetSource("ADE20K-Full semantic", "prepare_ade20k_full_sem_seg.py")
_PANOPTIC = DatasetSource("ADE20K panoptic", "prepare_ade20k_pan_seg.py (after prepare_ade20k_sem_seg.py)")
_INSTANCE = DatasetSource("ADE20K instance", "prepare_ade20k_ins_seg.py")


def register_all_ade20k_semantic(root: str) -> None:
    meta = get_ade20k_150_semantic_metadata()
    for split, dirname in _SPLITS:
        image_dir = os.path.join(root, _ADE, "images", dirname)
        gt_dir = os.path.join(root, _ADE, "annotations_detectron2", dirname)
        register_sem_seg_dataset(f"ade20k_sem_seg_{split}", image_dir, gt_dir, _SEMANTIC, meta)


def register_all_ade20k_full(root: str) -> None:
    meta = get_ade20k_full_metadata()
    for split, dirname in _SPLITS:
        image_dir = os.path.join(root, _ADE_FULL, "images_detectron2", dirname)
        gt_dir = os.path.join(root, _ADE_FULL, "annotations_detectron2", dirname)
        # 847 classes do not fit in uint8: labels are uint16 TIFFs, 65535 = ignore.
        register_sem_seg_dataset(
            f"ade20k_full_sem_seg_{split}", image_dir, gt_dir, _FULL, meta, gt_ext="tif", ignore_label=65535
        )


def register_all_ade20k_panoptic(root: str) -> None:
    meta = get_ade20k_panoptic_metadata()
    for split, dirname in _SPLITS:
        image_dir = os.path.join(root, _ADE, "images", dirname)
        pan_dir = os.path.join(root, _ADE, f"ade20k_panoptic_{split}")
        pan_json = os.path.join(root, _ADE, f"ade20k_panoptic_{split}.json")
        semseg_dir = os.path.join(root, _ADE, "annotations_detectron2", dirname)
        inst_json = os.path.join(root, _ADE, f"ade20k_instance_{split}.json")
        register_dataset(
            f"ade20k_panoptic_{split}",
            partial(load_panoptic_dicts, pan_json, image_dir, pan_dir, meta, _PANOPTIC, semseg_dir=semseg_dir),
            image_root=image_dir,
            panoptic_root=pan_dir,
            panoptic_json=pan_json,
            sem_seg_root=semseg_dir,
            # the instance json lets the panoptic model also be evaluated for instance AP
            json_file=inst_json,
            evaluator_type="ade20k_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            **meta,
        )


def register_all_ade20k_instance(root: str) -> None:
    meta = get_ade20k_instance_metadata()
    for split, dirname in _SPLITS:
        image_dir = os.path.join(root, _ADE, "images", dirname)
        inst_json = os.path.join(root, _ADE, f"ade20k_instance_{split}.json")
        register_dataset(
            f"ade20k_instance_{split}",
            partial(load_instance_dicts, inst_json, image_dir, meta, _INSTANCE),
            image_root=image_dir,
            json_file=inst_json,
            # Mask2Former's train_net evaluates ADE20K instance segmentation (InstanceSegEvaluator)
            # under this evaluator type, the same as the panoptic split with INSTANCE_ON.
            evaluator_type="ade20k_panoptic_seg",
            **meta,
        )
