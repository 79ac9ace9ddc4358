"""Chooses the training dataset mapper by name (cfg.INPUT.DATASET_MAPPER_NAME)."""

from typing import Callable, Dict

from detectron2.config import CfgNode

from .dataset_mappers import (
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)

__all__ = ["MAPPERS", "build_train_mapper"]

# cfg.INPUT.DATASET_MAPPER_NAME -> mapper class (each built with `cls(cfg, is_train=True)`)
MAPPERS: Dict[str, type] = {
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "mask_former_instance": MaskFormerInstanceDatasetMapper,
    "coco_instance_lsj": COCOInstanceNewBaselineDatasetMapper,
    "coco_panoptic_lsj": COCOPanopticNewBaselineDatasetMapper,
}


def build_train_mapper(cfg: CfgNode) -> Callable[[dict], dict]:
    """The training mapper named by cfg.INPUT.DATASET_MAPPER_NAME, built from `cfg`."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MAPPERS:
        raise ValueError(
            f"Unknown cfg.INPUT.DATASET_MAPPER_NAME {name!r}; known mappers: {sorted(MAPPERS)}"
        )
    return MAPPERS[name](cfg, is_train=True)
