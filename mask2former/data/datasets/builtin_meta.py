"""
Metadata fields (class names, colors, id maps) built from a class table.

The one rule from dataset ids to contiguous ids, used by every dataset of this package
(built-in and synthetic): a class's contiguous id is its position in its table. So
``thing_dataset_id_to_contiguous_id`` maps the dataset id of each thing class to its position
among *all* classes of the table (what a panoptic model predicts), and
``stuff_dataset_id_to_contiguous_id`` maps the dataset ids of all classes. A table of thing
classes only (an instance dataset) gives contiguous ids 0..#things-1.
"""
from typing import Any, Dict, List, Sequence

__all__ = [
    "thing_dataset_id_to_contiguous_id",
    "stuff_dataset_id_to_contiguous_id",
    "get_panoptic_metadata",
]


def thing_dataset_id_to_contiguous_id(categories: Sequence[Dict[str, Any]]) -> Dict[int, int]:
    """
    Args:
        categories: dicts with "id" and "isthing", in contiguous-id order.

    Returns:
        dataset id -> position in ``categories``, for the thing classes.
    """
    return {c["id"]: i for i, c in enumerate(categories) if c["isthing"]}


def stuff_dataset_id_to_contiguous_id(categories: Sequence[Dict[str, Any]]) -> Dict[int, int]:
    """dataset id -> position in ``categories``, for all classes."""
    return {c["id"]: i for i, c in enumerate(categories)}


def _colors(categories: Sequence[Dict[str, Any]]) -> List[List[int]]:
    return [list(c["color"]) for c in categories]


def get_panoptic_metadata(
    categories: Sequence[Dict[str, Any]], all_classes_are_thing_classes: bool = False
) -> Dict[str, Any]:
    """
    Metadata of a panoptic dataset: ``stuff_classes`` / ``stuff_colors`` list all classes (so
    the semantic evaluator and the classifier see the same classes), ``thing_classes`` /
    ``thing_colors`` the thing classes only, or all classes when
    ``all_classes_are_thing_classes`` (Mapillary Vistas' published metadata does that; its id
    map still lists only the things).

    Args:
        categories: dicts with "id", "name", "color", "isthing", in contiguous-id order.
    """
    things = [c for c in categories if c["isthing"]]
    listed_as_things = categories if all_classes_are_thing_classes else things
    return {
        "thing_classes": [c["name"] for c in listed_as_things],
        "thing_colors": _colors(listed_as_things),
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": _colors(categories),
        "thing_dataset_id_to_contiguous_id": thing_dataset_id_to_contiguous_id(categories),
        "stuff_dataset_id_to_contiguous_id": stuff_dataset_id_to_contiguous_id(categories),
    }
