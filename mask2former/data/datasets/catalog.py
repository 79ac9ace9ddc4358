"""Registering one dataset name in detectron2's catalogs."""
from typing import Any, Callable, Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["register_dataset"]


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
