"""
The one reader of the class tables in ``metadata/<name>_categories.json``.

The tables are the published ones, as they are: a JSON list of categories in contiguous-id
order, each an object with at least a string ``name`` and an integer ``id`` (the dataset id);
most also have ``color`` ([R, G, B]) and ``isthing`` (0 or 1). Tables:

- "ade20k_150": ADE20K SceneParsing, ids 0..149 (the pixel values of the prepared labels);
- "ade20k_full_847": ADE20K-Full, ``id`` is the ADE20K object id, ``trainId`` the label value;
- "ade20k_instance_100": the 100 ADE20K instance classes, ids = their ADE20K-150 index;
- "coco_stuff_171": COCO-Stuff, ids 1..182 with the unused ones skipped;
- "mapillary_vistas_65": Mapillary Vistas v1.2 panoptic categories, ids 1..65.
"""
import json
import os
from functools import lru_cache
from typing import Any, Dict, List

__all__ = ["METADATA_DIR", "list_metadata_tables", "load_metadata_table"]

METADATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metadata")
_SUFFIX = "_categories.json"


def list_metadata_tables() -> List[str]:
    """Names accepted by :func:`load_metadata_table` (file names without ``_categories.json``)."""
    return sorted(f[: -len(_SUFFIX)] for f in os.listdir(METADATA_DIR) if f.endswith(_SUFFIX))


def _check_category(path: str, i: int, cat: Any) -> None:
    if not isinstance(cat, dict) or not isinstance(cat.get("name"), str) or not isinstance(cat.get("id"), int):
        raise ValueError(f"{path}: entry {i} must be an object with a string 'name' and an integer 'id', got {cat!r}")
    color = cat.get("color")
    if color is not None and (len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
        raise ValueError(f"{path}: entry {i} ('{cat['name']}') has a bad color {color!r}")
    if cat.get("isthing", 0) not in (0, 1):
        raise ValueError(f"{path}: entry {i} ('{cat['name']}') has isthing={cat['isthing']!r}, expected 0 or 1")


@lru_cache(maxsize=None)
def _read_table(name: str) -> tuple:
    path = os.path.join(METADATA_DIR, name + _SUFFIX)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Unknown metadata table '{name}': {path} does not exist "
            f"(available: {', '.join(list_metadata_tables())})"
        )
    with open(path, "r") as f:
        categories = json.load(f)
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"{path}: expected a non-empty JSON list of categories")
    for i, cat in enumerate(categories):
        _check_category(path, i, cat)
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate category ids")
    return tuple(categories)


def load_metadata_table(name: str) -> List[Dict[str, Any]]:
    """
    Args:
        name: table name, one of :func:`list_metadata_tables`, e.g. "ade20k_150".

    Returns:
        The categories of the table in contiguous-id order, as fresh copies (callers may edit
        them).
    """
    return [dict(c) for c in _read_table(name)]
