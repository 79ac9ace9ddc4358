"""Checks that a config's class count agrees with the metadata of the datasets it names."""
from typing import Iterable

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

__all__ = ["dataset_num_classes", "check_num_classes", "config_task", "check_config_num_classes"]

_TASKS = ("semantic", "panoptic", "instance")


def _classes_key(task: str) -> str:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got '{task}'")
    return "thing_classes" if task == "instance" else "stuff_classes"


def dataset_num_classes(dataset_name: str, task: str) -> int:
    """
    Number of classes a model trained for ``task`` on ``dataset_name`` predicts: all classes
    (``stuff_classes``) for semantic and panoptic segmentation, the thing classes for instance
    segmentation.
    """
    key = _classes_key(task)
    meta = MetadataCatalog.get(dataset_name)
    if not hasattr(meta, key):
        raise KeyError(
            f"Metadata of dataset '{dataset_name}' has no '{key}' (is the dataset registered? "
            f"import mask2former.data.datasets)"
        )
    return len(getattr(meta, key))


def check_num_classes(dataset_names: Iterable[str], num_classes: int, task: str) -> None:
    """Raise ValueError naming the first dataset whose class count is not ``num_classes``."""
    for name in dataset_names:
        n = dataset_num_classes(name, task)
        if n != num_classes:
            raise ValueError(
                f"Dataset '{name}' has {n} classes for {task} segmentation (its metadata's "
                f"'{_classes_key(task)}'), but the config sets "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}"
            )


def config_task(cfg: CfgNode) -> str:
    """The task a Mask2Former config is trained for, from its MODEL.MASK_FORMER.TEST flags."""
    test = cfg.MODEL.MASK_FORMER.TEST
    if test.get("PANOPTIC_ON", False):
        return "panoptic"
    if test.get("SEMANTIC_ON", True):
        return "semantic"
    if test.get("INSTANCE_ON", False):
        return "instance"
    return "semantic"


def check_config_num_classes(cfg: CfgNode) -> None:
    """Check MODEL.SEM_SEG_HEAD.NUM_CLASSES against every dataset in DATASETS.TRAIN/TEST."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    check_num_classes(names, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, config_task(cfg))
