"""
The one reader of the class tables in ``metadata/<name>.json``.

Each table file is a JSON object with a human-readable ``description``, a ``complete`` flag
(False where the table is known to list fewer classes than the dataset has) and
``categories``: a list of objects that each have at least a ``name``; most also have ``id``,
``color`` ([R, G, B]) and ``isthing`` (0 or 1).
"""
import json
import os
from functools import lru_cache
from typing import Any, Dict, List

__all__ = ["METADATA_DIR", "list_metadata_tables", "load_metadata_table", "metadata_table_is_complete"]

METADATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metadata")


def list_metadata_tables() -> List[str]:
    """Names accepted by :func:`load_metadata_table` (file names without ``.json``)."""
    return sorted(f[: -len(".json")] for f in os.listdir(METADATA_DIR) if f.endswith(".json"))


@lru_cache(maxsize=None)
def _read_table(name: str) -> Dict[str, Any]:
    path = os.path.join(METADATA_DIR, name + ".json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Unknown metadata table '{name}': {path} does not exist "
            f"(available: {', '.join(list_metadata_tables())})"
        )
    with open(path, "r") as f:
        table = json.load(f)
    categories = table.get("categories")
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"{path}: key 'categories' must be a non-empty list")
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not isinstance(cat.get("name"), str):
            raise ValueError(f"{path}: categories[{i}] must be an object with a string 'name', got {cat!r}")
        color = cat.get("color")
        if color is not None and (
            len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        ):
            raise ValueError(f"{path}: categories[{i}] ('{cat['name']}') has a bad color {color!r}")
        if cat.get("isthing", 0) not in (0, 1):
            raise ValueError(
                f"{path}: categories[{i}] ('{cat['name']}') has isthing={cat['isthing']!r}, expected 0 or 1"
            )
    return table


def load_metadata_table(name: str) -> List[Dict[str, Any]]:
    """
    Args:
        name: table name, e.g. "ade20k_150", "coco_stuff_171", "mapillary_vistas_65",
            "ade20k_full_847".

    Returns:
        The categories of the table in contiguous-id order, as fresh copies (callers may edit
        them). Any length is accepted: a dataset's expected class count is checked where the
        dataset is registered or used (see ``mask2former.data.datasets.checks``).
    """
    return [dict(c) for c in _read_table(name)["categories"]]


def metadata_table_is_complete(name: str) -> bool:
    """False for tables that are known to list only part of the dataset's classes."""
    return bool(_read_table(name).get("complete", True))
