"""Registering one dataset name in detectron2's catalogs, and where the datasets are."""
import os
from functools import partial
from typing import Any, Callable, Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog

from .loaders import DatasetSource, load_sem_seg_dicts

__all__ = ["datasets_root", "register_dataset", "register_sem_seg_dataset", "register_panoptic_dataset"]


def datasets_root() -> str:
    """The folder of the datasets: ``$DETECTRON2_DATASETS``, default "datasets" (as detectron2)."""
    return os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def register_dataset(name: str, loader: Callable[[], List[Dict[str, Any]]], **metadata: Any) -> None:
    """
    Register ``loader`` under ``name`` and set its metadata, replacing any earlier
    registration of the same name (both its loader and its metadata).

    Replacing, rather than failing, lets ``register_all(root)`` be called again with another
    root. Only this package's own names are registered through here: detectron2's names stay
    as detectron2 registered them.
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def register_sem_seg_dataset(
    name: str,
    image_dir: str,
    gt_dir: str,
    source: DatasetSource,
    metadata: Dict[str, Any],
    gt_ext: str = "png",
    ignore_label: int = 255,
    image_ext: str = "jpg",
) -> None:
    """
    Register a semantic segmentation dataset of ``image_dir/*.{image_ext}`` images and
    same-named label files ``gt_dir/*.{gt_ext}``, evaluated by detectron2's ``sem_seg`` evaluator.
    """
    register_dataset(
        name,
        partial(load_sem_seg_dicts, gt_dir, image_dir, source, gt_ext=gt_ext, image_ext=image_ext),
        image_root=image_dir,
        sem_seg_root=gt_dir,
        evaluator_type="sem_seg",
        ignore_label=ignore_label,
        **metadata,
    )


def register_panoptic_dataset(
    name: str,
    loader: Callable[[], List[Dict[str, Any]]],
    metadata: Dict[str, Any],
    image_root: str,
    panoptic_root: str,
    sem_seg_root: str,
    panoptic_json: str,
    instances_json: Optional[str],
    evaluator_type: str,
    ignore_label: int = 255,
) -> None:
    """
    Register a panoptic dataset (COCO panoptic format plus semantic label PNGs); the metadata
    fields are the ones the panoptic, semantic and (with ``instances_json``) instance
    evaluators read.
    """
    paths = dict(
        image_root=image_root, panoptic_root=panoptic_root, panoptic_json=panoptic_json, sem_seg_root=sem_seg_root
    )
    if instances_json is not None:
        paths["json_file"] = instances_json
    register_dataset(
        name, loader, evaluator_type=evaluator_type, ignore_label=ignore_label, label_divisor=1000, **paths, **metadata
    )
