"""
COCO datasets that Mask2Former uses beyond detectron2's own registrations:

- "coco_2017_{train,val}_panoptic": detectron2 registers these with thing_classes holding all
  133 classes and a loader that fails with a bare assertion when data is missing; they are
  re-registered here with Mask2Former's metadata (80 thing classes, 133 classes in total,
  contiguous ids) and a loader with clear errors.
- "coco_2017_{train,val}_panoptic_with_sem_seg": the same plus "sem_seg_file_name" pointing to
  the semantic PNGs made by datasets/prepare_coco_semantic_annos_from_panoptic_annos.py (the
  COCO panoptic configs evaluate on these, for PQ, AP and mIoU at once).
- "coco_2017_{train,test}_stuff_10k_sem_seg": COCO-Stuff-10k, 171 classes.

COCO instance ("coco_2017_train", "coco_2017_val") is detectron2's registration, used as is.
"""
import os
from functools import partial

from .builtin_meta import get_coco_panoptic_metadata, get_coco_stuff_171_metadata
from .catalog import register_dataset, register_sem_seg_dataset
from .loaders import DatasetSource, load_panoptic_dicts

__all__ = ["register_all_coco_panoptic", "register_all_coco_stuff_10k"]

_COCO_PANOPTIC_SPLITS = {
    # name: (image_root, panoptic_root, panoptic_json, sem_seg_root, instances_json)
    "coco_2017_train_panoptic": (
        "coco/train2017",
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_semseg_train2017",
        "coco/annotations/instances_train2017.json",
    ),
    "coco_2017_val_panoptic": (
        "coco/val2017",
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_semseg_val2017",
        "coco/annotations/instances_val2017.json",
    ),
}

_COCO_STUFF_10K_SPLITS = {
    "coco_2017_train_stuff_10k_sem_seg": (
        "coco/coco_stuff_10k/images_detectron2/train",
        "coco/coco_stuff_10k/annotations_detectron2/train",
    ),
    "coco_2017_test_stuff_10k_sem_seg": (
        "coco/coco_stuff_10k/images_detectron2/test",
        "coco/coco_stuff_10k/annotations_detectron2/test",
    ),
}

_PANOPTIC = DatasetSource("COCO panoptic", script=None)
_PANOPTIC_SEMSEG = DatasetSource(
    "COCO panoptic with semantic annotations", "prepare_coco_semantic_annos_from_panoptic_annos.py"
)
_STUFF_10K = DatasetSource("COCO-Stuff-10k", "prepare_coco_stuff_10k_sem_seg.py")


def register_all_coco_panoptic(root: str) -> None:
    meta = get_coco_panoptic_metadata()
    for name, (image_root, pan_root, pan_json, semseg_root, inst_json) in _COCO_PANOPTIC_SPLITS.items():
        image_root, pan_root, pan_json, semseg_root, inst_json = (
            os.path.join(root, p) for p in (image_root, pan_root, pan_json, semseg_root, inst_json)
        )
        common = dict(
            image_root=image_root,
            panoptic_root=pan_root,
            panoptic_json=pan_json,
            json_file=inst_json,
            evaluator_type="coco_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            **meta,
        )
        register_dataset(
            name, partial(load_panoptic_dicts, pan_json, image_root, pan_root, meta, _PANOPTIC), **common
        )
        register_dataset(
            name + "_with_sem_seg",
            partial(
                load_panoptic_dicts, pan_json, image_root, pan_root, meta, _PANOPTIC_SEMSEG, semseg_dir=semseg_root
            ),
            sem_seg_root=semseg_root,
            **common,
        )


def register_all_coco_stuff_10k(root: str) -> None:
    meta = get_coco_stuff_171_metadata()
    for name, (image_dir, gt_dir) in _COCO_STUFF_10K_SPLITS.items():
        image_dir, gt_dir = os.path.join(root, image_dir), os.path.join(root, gt_dir)
        register_sem_seg_dataset(name, image_dir, gt_dir, _STUFF_10K, meta)
