"""
Registering your own dataset with one call: COCO instance, COCO panoptic or semantic PNGs.

:func:`register_custom_dataset` derives every metadata field the mappers, MaskFormer inference
and the evaluators read (classes, colors, id maps, ``evaluator_type``, ``ignore_label``,
``label_divisor``, the ground-truth paths) from the files and, for semantic PNGs, the class
names; it loads the data with the built-in datasets' loaders (:mod:`.loaders`) and registers
it through :mod:`.catalog`.

Contiguous ids follow the built-in rule (:mod:`.builtin_meta`): a class's position in its
table. The table is the json's "categories" sorted by id, and for a panoptic dataset the thing
classes first, then the stuff classes (as COCO panoptic): thing ids are then 0..#things-1,
which COCO's mask-AP evaluator requires, and the values of the semantic PNGs of a panoptic
dataset must be these positions.
"""

import json
import os
from functools import partial
from typing import Any, Dict, List, Optional, Sequence

from detectron2.data import Metadata, MetadataCatalog
from detectron2.utils.colormap import colormap
from detectron2.utils.file_io import PathManager

from .builtin_meta import get_panoptic_metadata, thing_dataset_id_to_contiguous_id
from .catalog import register_dataset, register_panoptic_dataset, register_sem_seg_dataset
from .loaders import DatasetSource, load_instance_dicts, load_panoptic_dicts

__all__ = ["CUSTOM_TASKS", "register_custom_dataset"]

CUSTOM_TASKS = ("instance", "panoptic", "semantic")


class _CustomSource(DatasetSource):
    """Error hints of a user's dataset: the paths come from the registration call."""

    def __init__(self, name: str):
        super().__init__(f"Dataset {name!r}")

    def hint(self) -> str:
        return "check the paths given to register_custom_dataset"


def _palette(n: int) -> List[List[int]]:
    colors = colormap(rgb=True, maximum=255)
    return [[int(v) for v in colors[i % len(colors)]] for i in range(n)]


def _require(name: str, arg: str, path: Optional[str], kind: str) -> str:
    if path is None:
        raise ValueError(f"register_custom_dataset({name!r}): {arg} is required for this task")
    exists = PathManager.isdir(path) if kind == "dir" else PathManager.isfile(path)
    if not exists:
        raise FileNotFoundError(
            f"register_custom_dataset({name!r}): {arg} {path} is not an existing {kind}"
        )
    return path


def _json_categories(json_file: str, needs_isthing: bool) -> List[Dict[str, Any]]:
    """The "categories" of a COCO json, sorted by id (things first if ``needs_isthing``)."""
    with PathManager.open(json_file) as f:
        categories = json.load(f).get("categories")
    if not categories:
        raise ValueError(
            f"{json_file}: no 'categories' list; the class names and ids are read from it"
        )
    required = ("id", "name", "isthing") if needs_isthing else ("id", "name")
    seen_ids = set()
    for c in categories:
        missing = [k for k in required if k not in c]
        if missing or c["id"] in seen_ids:
            problem = (
                f"lacks the keys {missing}" if missing else "repeats the id of another category"
            )
            raise ValueError(f"{json_file}: category {c} {problem}")
        seen_ids.add(c["id"])
    categories = sorted(categories, key=lambda c: (not c.get("isthing", True), c["id"]))
    colors = _palette(len(categories))
    return [
        {
            "id": c["id"],
            "name": c["name"],
            # every class of an instance json is a thing class
            "isthing": int(c["isthing"]) if needs_isthing else 1,
            "color": c.get("color", colors[i]),
        }
        for i, c in enumerate(categories)
    ]


def _register_instance(name: str, image_root: str, json_file: str, source: DatasetSource) -> None:
    categories = _json_categories(json_file, needs_isthing=False)
    meta = {
        "thing_classes": [c["name"] for c in categories],
        "thing_colors": [c["color"] for c in categories],
        "thing_dataset_id_to_contiguous_id": thing_dataset_id_to_contiguous_id(categories),
    }
    loader = partial(load_instance_dicts, json_file, image_root, meta, source)
    register_dataset(
        name, loader, evaluator_type="coco", image_root=image_root, json_file=json_file, **meta
    )


def _register_panoptic(
    name: str,
    image_root: str,
    json_file: str,
    panoptic_root: str,
    sem_seg_root: Optional[str],
    instances_json: Optional[str],
    ignore_label: int,
    source: DatasetSource,
) -> None:
    meta = get_panoptic_metadata(_json_categories(json_file, needs_isthing=True))
    loader = partial(
        load_panoptic_dicts, json_file, image_root, panoptic_root, meta, source, sem_seg_root
    )
    register_panoptic_dataset(
        name,
        loader,
        meta,
        image_root,
        panoptic_root,
        sem_seg_root,
        json_file,
        instances_json,
        "coco_panoptic_seg",
        ignore_label=ignore_label,
    )


def register_custom_dataset(
    name: str,
    task: str,
    image_root: str,
    *,
    json_file: Optional[str] = None,
    panoptic_root: Optional[str] = None,
    sem_seg_root: Optional[str] = None,
    ignore_label: int = 255,
    instances_json: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    image_ext: str = "jpg",
) -> Metadata:
    """
    Register one split of your own dataset under ``name`` (replacing an earlier registration
    of that name). The files are checked now; the dataset dicts are loaded when used.

    Args:
        name: the name to put in DATASETS.TRAIN / DATASETS.TEST, e.g. "my_dataset_train".
        task: "instance" (COCO instance json), "panoptic" (COCO panoptic json and PNGs) or
            "semantic" (label PNGs, pixel value = class index, ``ignore_label`` = unlabeled).
        image_root: folder of the images.
        json_file: instance: the COCO instance json; panoptic: the COCO panoptic json (its
            "categories" with "isthing" give the classes).
        panoptic_root: panoptic: folder of the panoptic PNGs.
        sem_seg_root: semantic: folder of the label PNGs, one per image with the image's file
            name stem; panoptic (optional, for mIoU with SEMANTIC_ON): semantic PNGs whose
            values are indices into the registered ``stuff_classes``.
        ignore_label: the label of unannotated pixels (panoptic and semantic).
        instances_json: panoptic (optional, for mask AP with INSTANCE_ON): the COCO instance
            json of the thing classes.
        class_names: semantic only: the name of each class index (the json tasks read theirs).
        image_ext: semantic only: the images' extension (images and labels pair by file stem).

    Returns:
        the registered metadata: ``thing_classes`` (instance) or ``stuff_classes`` (panoptic:
        all classes, things first; semantic) has MODEL.SEM_SEG_HEAD.NUM_CLASSES entries.

    Raises:
        ValueError: an unknown task, a path the task needs that is not given, class names
            given or missing wrongly, a json without usable "categories".
        FileNotFoundError: a given path that does not exist (the argument is named).
    """
    if task not in CUSTOM_TASKS:
        raise ValueError(
            f"register_custom_dataset({name!r}): task must be one of {CUSTOM_TASKS}, got {task!r}"
        )
    if (class_names is None) == (task == "semantic"):
        which = (
            "needs class_names"
            if task == "semantic"
            else "reads the classes from json_file, not class_names"
        )
        raise ValueError(f"register_custom_dataset({name!r}): a {task} dataset {which}")
    _require(name, "image_root", image_root, "dir")
    source = _CustomSource(name)
    if task == "instance":
        _register_instance(name, image_root, _require(name, "json_file", json_file, "file"), source)
    elif task == "panoptic":
        _register_panoptic(
            name,
            image_root,
            _require(name, "json_file", json_file, "file"),
            _require(name, "panoptic_root", panoptic_root, "dir"),
            sem_seg_root and _require(name, "sem_seg_root", sem_seg_root, "dir"),
            instances_json and _require(name, "instances_json", instances_json, "file"),
            ignore_label,
            source,
        )
    else:
        gt_dir = _require(name, "sem_seg_root", sem_seg_root, "dir")
        meta = {"stuff_classes": list(class_names), "stuff_colors": _palette(len(class_names))}
        register_sem_seg_dataset(
            name, image_root, gt_dir, source, meta, ignore_label=ignore_label, image_ext=image_ext
        )
    return MetadataCatalog.get(name)
