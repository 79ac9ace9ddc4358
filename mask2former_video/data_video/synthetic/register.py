"""
Registers the synthetic video dataset as ``synthetic_video_train`` and ``synthetic_video_val``
(YouTube-VIS format, the image synthetic dataset's 5 thing classes, evaluator "ytvis"). The
loaders generate the data with the default arguments on first use if it is not there.
"""
from functools import partial
from typing import Dict, List

from mask2former.data.datasets.catalog import register_dataset
from mask2former.data.synthetic.metadata import synthetic_metadata

from ..datasets.ytvis import load_ytvis_json
from .generator import SPLIT_DIRS, ensure_synthetic_video_dataset, split_paths

__all__ = ["register_all_synthetic_video", "load_synthetic_video"]


def load_synthetic_video(root: str, split: str, dataset_name: str) -> List[Dict]:
    """Generates the data if needed, then reads the split's JSON with :func:`load_ytvis_json`."""
    ensure_synthetic_video_dataset(root)
    image_root, json_file = split_paths(root, split)
    return load_ytvis_json(json_file, image_root, dataset_name)


def register_all_synthetic_video(root: str, prefix: str = "synthetic_video") -> List[str]:
    """
    Registers ``<prefix>_train`` and ``<prefix>_val`` for data under ``<root>/synthetic_video``
    (replacing earlier registrations of these names).

    Returns:
        list[str]: the registered names.
    """
    meta = synthetic_metadata()
    things = {k: meta[k] for k in ("thing_classes", "thing_colors", "thing_dataset_id_to_contiguous_id")}
    names = []
    for split in SPLIT_DIRS:
        name = f"{prefix}_{split}"
        image_root, json_file = split_paths(root, split)
        loader = partial(load_synthetic_video, root, split, name)
        register_dataset(
            name, loader, json_file=json_file, image_root=image_root, evaluator_type="ytvis", **things
        )
        names.append(name)
    return names
