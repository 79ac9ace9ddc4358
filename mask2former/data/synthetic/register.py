"""
Registers the synthetic dataset with detectron2, lazily: the loaders generate the data on
first use (see :func:`ensure_synthetic_dataset`), registration itself touches no file.

Names (with the default prefix "synthetic"), for split in {train, val}:
    synthetic_panoptic_{split}  COCO-panoptic-style dicts (+ sem_seg_file_name), evaluator
                                "coco_panoptic_seg"; metadata json_file = the instances json
    synthetic_instance_{split}  COCO instance dicts (load_coco_json), evaluator "coco"
    synthetic_sem_seg_{split}   semantic dicts (load_sem_seg), evaluator "sem_seg"
"""

import os
from functools import partial
from typing import Dict, List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_sem_seg

from ..datasets.catalog import datasets_root
from ..datasets.loaders import DatasetSource, load_panoptic_dicts
from .generator import SPLITS, ensure_synthetic_dataset, synthetic_dir
from .metadata import synthetic_metadata

__all__ = ["register_all_synthetic", "load_synthetic_panoptic"]

IGNORE_LABEL = 255
LABEL_DIVISOR = 1000
_SOURCE = DatasetSource("Synthetic dataset (python -m mask2former.data.synthetic regenerates it)")


def _paths(root: str, split: str) -> Dict[str, str]:
    d = synthetic_dir(root)
    return {
        "image_root": os.path.join(d, "images", split),
        "panoptic_root": os.path.join(d, f"panoptic_{split}"),
        "panoptic_json": os.path.join(d, "annotations", f"panoptic_{split}.json"),
        "json_file": os.path.join(d, "annotations", f"instances_{split}.json"),
        "sem_seg_root": os.path.join(d, f"semantic_{split}"),
    }


def load_synthetic_panoptic(root: str, split: str) -> List[Dict]:
    """
    Generates the data if needed, then reads the panoptic json of `split` with the built-in
    datasets' panoptic loader.

    Returns:
        list[dict]: detectron2 dicts with file_name, image_id, height, width,
        pan_seg_file_name, sem_seg_file_name and segments_info (category_id contiguous,
        isthing set), like detectron2's COCO panoptic loader.
    """
    ensure_synthetic_dataset(root)
    p = _paths(root, split)
    return load_panoptic_dicts(
        p["panoptic_json"], p["image_root"], p["panoptic_root"], synthetic_metadata(), _SOURCE, p["sem_seg_root"]
    )


def _load_instances(root: str, split: str, name: str) -> List[Dict]:
    ensure_synthetic_dataset(root)
    p = _paths(root, split)
    return load_coco_json(p["json_file"], p["image_root"], dataset_name=name)


def _load_sem_seg(root: str, split: str) -> List[Dict]:
    ensure_synthetic_dataset(root)
    p = _paths(root, split)
    return load_sem_seg(p["sem_seg_root"], p["image_root"], gt_ext="png", image_ext="jpg")


def register_all_synthetic(root: Optional[str] = None, prefix: str = "synthetic") -> List[str]:
    """
    Registers the six synthetic datasets whose data lives (or will be generated) under
    ``<root>/synthetic``; `root` defaults to $DETECTRON2_DATASETS or "datasets". Names
    already registered for the same root are left alone (registering twice is harmless);
    for another root they are an error (pass another `prefix`).

    Returns:
        list[str]: the names registered by this call.
    """
    root = datasets_root() if root is None else root
    meta = synthetic_metadata()
    things = {
        k: meta[k] for k in ("thing_classes", "thing_colors", "thing_dataset_id_to_contiguous_id")
    }
    stuff = {
        k: meta[k] for k in ("stuff_classes", "stuff_colors", "stuff_dataset_id_to_contiguous_id")
    }
    registered = []
    for split in SPLITS:
        p = _paths(root, split)
        instance_name = f"{prefix}_instance_{split}"
        panoptic = dict(meta, evaluator_type="coco_panoptic_seg", label_divisor=LABEL_DIVISOR, **p)
        instance = dict(things, evaluator_type="coco", image_root=p["image_root"], json_file=p["json_file"])
        semantic = dict(stuff, evaluator_type="sem_seg", image_root=p["image_root"], sem_seg_root=p["sem_seg_root"])
        panoptic["ignore_label"] = semantic["ignore_label"] = IGNORE_LABEL
        entries = {
            f"{prefix}_panoptic_{split}": (partial(load_synthetic_panoptic, root, split), panoptic),
            instance_name: (partial(_load_instances, root, split, instance_name), instance),
            f"{prefix}_sem_seg_{split}": (partial(_load_sem_seg, root, split), semantic),
        }
        for name, (loader, metadata) in entries.items():
            if name in DatasetCatalog.list():
                existing = MetadataCatalog.get(name).get("image_root")
                if existing != metadata["image_root"]:
                    raise ValueError(
                        f"Dataset {name!r} is already registered with image_root {existing!r}, "
                        f"not {metadata['image_root']!r}: use another prefix"
                    )
                continue
            DatasetCatalog.register(name, loader)
            MetadataCatalog.get(name).set(**metadata)
            registered.append(name)
    return registered
