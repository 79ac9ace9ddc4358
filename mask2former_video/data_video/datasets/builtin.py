"""
Registers the video datasets; this is the one place where they are registered. Importing
``mask2former_video.data_video`` calls :func:`register_all_video` with the root
``$DETECTRON2_DATASETS`` (default "datasets"). Loading is lazy: nothing is read until a
dataset is used.

- ytvis_2019_{train,val}: ytvis_2019/{train,valid}/JPEGImages and ytvis_2019/{train,valid}.json
- ytvis_2021_{train,val}: the same under ytvis_2021/
- synthetic_video_{train,val}: see mask2former_video.data_video.synthetic
"""
import json
import os
from functools import lru_cache
from typing import Any, Dict

from mask2former.data.datasets.catalog import datasets_root
from mask2former.data.datasets.metadata_tables import _check_category

from ..synthetic.register import register_all_synthetic_video
from .ytvis import register_ytvis_instances

__all__ = [
    "ytvis_metadata",
    "register_all_ytvis_2019",
    "register_all_ytvis_2021",
    "register_all_video",
    "YTVIS_SPLITS",
]

_TABLE_DIR = os.path.dirname(os.path.abspath(__file__))

# version -> name -> (image_root, json_file), relative to the datasets root
YTVIS_SPLITS = {
    year: {
        f"ytvis_{year}_train": (f"ytvis_{year}/train/JPEGImages", f"ytvis_{year}/train.json"),
        f"ytvis_{year}_val": (f"ytvis_{year}/valid/JPEGImages", f"ytvis_{year}/valid.json"),
    }
    for year in (2019, 2021)
}


@lru_cache(maxsize=None)
def _read_table(year: int) -> tuple:
    path = os.path.join(_TABLE_DIR, f"ytvis_{year}_categories.json")
    with open(path) as f:
        categories = json.load(f)
    for i, cat in enumerate(categories):
        _check_category(path, i, cat)
    return tuple(categories)


def ytvis_metadata(year: int) -> Dict[str, Any]:
    """thing_classes, thing_colors and thing_dataset_id_to_contiguous_id of YouTube-VIS `year`."""
    if year not in YTVIS_SPLITS:
        raise ValueError(f"YouTube-VIS {year!r}: expected one of {sorted(YTVIS_SPLITS)}")
    categories = _read_table(year)
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_colors": [tuple(c["color"]) for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def _register_ytvis(year: int, root: str) -> None:
    for name, (image_root, json_file) in YTVIS_SPLITS[year].items():
        register_ytvis_instances(
            name, ytvis_metadata(year), os.path.join(root, json_file), os.path.join(root, image_root)
        )


def register_all_ytvis_2019(root: str) -> None:
    """Registers ytvis_2019_{train,val} for data under ``<root>/ytvis_2019`` (see datasets/README.md)."""
    _register_ytvis(2019, root)


def register_all_ytvis_2021(root: str) -> None:
    """Registers ytvis_2021_{train,val} for data under ``<root>/ytvis_2021``."""
    _register_ytvis(2021, root)


def register_all_video(root: str) -> None:
    """Registers every video dataset under `root` (again: replaces the earlier registration)."""
    register_all_ytvis_2019(root)
    register_all_ytvis_2021(root)
    register_all_synthetic_video(root)


register_all_video(datasets_root())
