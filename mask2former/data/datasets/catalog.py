"""Registering one dataset name in detectron2's catalogs."""
from functools import partial
from typing import Any, Callable, Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog

from .loaders import DatasetSource, load_sem_seg_dicts

__all__ = ["register_dataset", "register_sem_seg_dataset"]


def register_dataset(name: str, loader: Callable[[], List[Dict[str, Any]]], **metadata: Any) -> None:
    """
    Register ``loader`` under ``name`` and set its metadata, replacing any earlier
    registration of the same name (both its loader and its metadata).

    Replacing, rather than failing, lets ``register_all(root)`` be called again with another
    root, and lets this package take over the few names that detectron2 registers with
    loaders or metadata that Mask2Former cannot use as they are.
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
) -> None:
    """
    Register a semantic segmentation dataset of ``image_dir/*.jpg`` images and same-named label
    files ``gt_dir/*.{gt_ext}``, evaluated by detectron2's ``sem_seg`` evaluator.
    """
    register_dataset(
        name,
        partial(load_sem_seg_dicts, gt_dir, image_dir, source, gt_ext=gt_ext, image_ext="jpg"),
        image_root=image_dir,
        sem_seg_root=gt_dir,
        evaluator_type="sem_seg",
        ignore_label=ignore_label,
        **metadata,
    )
