"""The synthetic dataset's classes: read once from ``categories.json`` and turned into metadata."""

import functools
import hashlib
import json
import os
from typing import Any, Dict, List

from ..datasets.builtin_meta import stuff_dataset_id_to_contiguous_id, thing_dataset_id_to_contiguous_id

__all__ = [
    "CATEGORIES_FILE",
    "load_synthetic_categories",
    "categories_digest",
    "synthetic_metadata",
]

CATEGORIES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "categories.json")

_THING_KEYS = ("id", "name", "isthing", "color", "shape", "hue")
_STUFF_KEYS = ("id", "name", "isthing", "color", "region", "texture", "base_rgb")


@functools.lru_cache(maxsize=None)
def _load(path: str) -> tuple:
    with open(path) as f:
        cats = json.load(f)["categories"]
    for c in cats:
        required = _THING_KEYS if c.get("isthing") else _STUFF_KEYS
        missing = [k for k in required if k not in c]
        if missing:
            raise ValueError(f"{path}: category {c.get('name', c)!r} lacks keys {missing}")
    ids = [c["id"] for c in cats]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate category ids in {ids}")
    things = [c for c in cats if c["isthing"]]
    # Contiguous ids are list positions: things must come first and be sorted by id, or the
    # ids detectron2's load_coco_json assigns (sorted thing ids) would disagree with ours.
    if cats[: len(things)] != things or [c["id"] for c in things] != sorted(
        c["id"] for c in things
    ):
        raise ValueError(f"{path}: thing categories must come first, in ascending id order")
    return tuple(cats)


def load_synthetic_categories(path: str = CATEGORIES_FILE) -> List[Dict[str, Any]]:
    """
    Returns:
        list[dict]: the categories (copies), things first; a category's contiguous id is its index.
    """
    return [dict(c) for c in _load(os.path.abspath(path))]


def categories_digest(path: str = CATEGORIES_FILE) -> str:
    """md5 of the categories file: generated data made from other classes is stale."""
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def synthetic_metadata(path: str = CATEGORIES_FILE) -> Dict[str, Any]:
    """
    detectron2 metadata fields shared by the synthetic datasets. As for detectron2's panoptic
    datasets, ``stuff_classes`` lists every class (things first) so that the semantic labels
    cover things and stuff, and ``stuff_dataset_id_to_contiguous_id`` maps every dataset id.
    Contiguous ids follow the built-in datasets' rule (``builtin_meta``): a class's position
    in the table.
    """
    cats = load_synthetic_categories(path)
    things = [c for c in cats if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [tuple(c["color"]) for c in things],
        "stuff_classes": [c["name"] for c in cats],
        "stuff_colors": [tuple(c["color"]) for c in cats],
        "thing_dataset_id_to_contiguous_id": thing_dataset_id_to_contiguous_id(cats),
        "stuff_dataset_id_to_contiguous_id": stuff_dataset_id_to_contiguous_id(cats),
    }
