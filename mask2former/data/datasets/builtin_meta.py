"""
Metadata (class names, colors, id maps) of the built-in datasets, built from the class tables.

Conventions shared by all panoptic datasets here (they are what Mask2Former's mappers,
inference and evaluators expect):

- ``stuff_classes`` / ``stuff_colors`` list *all* classes (things and stuff) in contiguous-id
  order, so that the semantic-segmentation evaluator and the classifier see the same
  ``NUM_CLASSES`` classes;
- ``thing_classes`` / ``thing_colors`` list the thing classes only;
- ``thing_dataset_id_to_contiguous_id`` maps the dataset ids of things to their position in
  ``stuff_classes``; ``stuff_dataset_id_to_contiguous_id`` maps the dataset ids of *all* classes
  (so the semantic evaluator can map every class back).
"""
from typing import Any, Dict, List

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .metadata_tables import load_metadata_table

__all__ = [
    "ADE20K_FULL_NUM_CLASSES",
    "get_panoptic_metadata",
    "get_instance_metadata",
    "get_semantic_metadata",
    "get_coco_panoptic_metadata",
    "get_ade20k_150_semantic_metadata",
    "get_ade20k_panoptic_metadata",
    "get_ade20k_instance_metadata",
    "get_ade20k_full_metadata",
    "get_mapillary_vistas_semantic_metadata",
    "get_mapillary_vistas_panoptic_metadata",
    "get_coco_stuff_171_metadata",
]

ADE20K_FULL_NUM_CLASSES = 847


def get_panoptic_metadata(categories: List[Dict[str, Any]]) -> Dict[str, Any]:
    """
    Args:
        categories: dicts with "id" (dataset id), "name", "color", "isthing", in
            contiguous-id order.
    """
    things = [(i, c) for i, c in enumerate(categories) if c["isthing"]]
    return {
        "thing_classes": [c["name"] for _, c in things],
        "thing_colors": [list(c["color"]) for _, c in things],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [list(c["color"]) for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in things},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def get_instance_metadata(categories: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Thing classes only, with contiguous ids 0..#things-1 (as an instance model predicts)."""
    things = [c for c in categories if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [list(c["color"]) for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
    }


def get_semantic_metadata(categories: List[Dict[str, Any]]) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"stuff_classes": [c["name"] for c in categories]}
    if all("color" in c for c in categories):
        meta["stuff_colors"] = [list(c["color"]) for c in categories]
    return meta


def get_coco_panoptic_metadata() -> Dict[str, Any]:
    """COCO panoptic, 133 classes (80 things first, then 53 stuff), from detectron2's table."""
    return get_panoptic_metadata(COCO_CATEGORIES)


def get_ade20k_150_semantic_metadata() -> Dict[str, Any]:
    return get_semantic_metadata(load_metadata_table("ade20k_150"))


def get_ade20k_panoptic_metadata() -> Dict[str, Any]:
    """ADE20K panoptic: 150 classes, 100 things; dataset ids are the 0-based class indices."""
    return get_panoptic_metadata(load_metadata_table("ade20k_150"))


def get_ade20k_instance_metadata() -> Dict[str, Any]:
    """ADE20K instance: the 100 thing classes, dataset ids = 0-based ADE-150 class index."""
    return get_instance_metadata(load_metadata_table("ade20k_150"))


def get_ade20k_full_metadata() -> Dict[str, Any]:
    """
    ADE20K-Full, 847 classes. The packaged name table is partial (see its "unverified" note):
    names past it are placeholders, so the class count is right but those names are not.
    """
    names = [c["name"] for c in load_metadata_table("ade20k_full_847")][:ADE20K_FULL_NUM_CLASSES]
    names += [f"ade20k_full_class_{i}" for i in range(len(names), ADE20K_FULL_NUM_CLASSES)]
    return {"stuff_classes": names}


def get_mapillary_vistas_semantic_metadata() -> Dict[str, Any]:
    return get_semantic_metadata(load_metadata_table("mapillary_vistas_65"))


def get_mapillary_vistas_panoptic_metadata() -> Dict[str, Any]:
    return get_panoptic_metadata(load_metadata_table("mapillary_vistas_65"))


def get_coco_stuff_171_metadata() -> Dict[str, Any]:
    """COCO-Stuff: 80 things + 91 stuff; "stuff_dataset_id_to_contiguous_id" maps COCO-Stuff ids."""
    categories = load_metadata_table("coco_stuff_171")
    meta = get_semantic_metadata(categories)
    meta["stuff_dataset_id_to_contiguous_id"] = {c["id"]: i for i, c in enumerate(categories)}
    return meta
