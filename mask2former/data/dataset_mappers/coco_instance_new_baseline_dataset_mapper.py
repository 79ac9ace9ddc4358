"""Large-scale-jitter training mapper for COCO instance segmentation ("coco_instance_lsj")."""

from typing import Any, Dict, List

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T

from .base import build_lsj_augmentations
from .common import annotation_mask
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper

__all__ = [
    "COCOInstanceNewBaselineDatasetMapper",
    "build_transform_gen",
    "convert_coco_poly_to_mask",
]


def build_transform_gen(cfg: CfgNode, is_train: bool) -> List[T.Augmentation]:
    """The large-scale-jitter augmentations (flip, ResizeScale, FixedSizeCrop) of the config."""
    if not is_train:
        raise ValueError("build_transform_gen: large-scale jitter is a training augmentation")
    return build_lsj_augmentations(cfg)


def convert_coco_poly_to_mask(segmentations: List[Any], height: int, width: int) -> torch.Tensor:
    """
    COCO segmentations (polygon lists, RLEs) rasterised at (height, width): an (N, H, W) uint8
    tensor of 0 / 1, (0, H, W) for none.
    """
    masks = [annotation_mask(s, (height, width), "convert_coco_poly_to_mask") for s in segmentations]
    if not masks:
        return torch.zeros((0, height, width), dtype=torch.uint8)
    return torch.from_numpy(np.stack(masks).astype(np.uint8))


def lsj_mapper_args(args: Dict[str, Any], cfg: CfgNode, is_train: bool) -> Dict[str, Any]:
    """A MaskFormer mapper's ``from_config`` arguments turned to large-scale jitter: its
    augmentations, a fixed-size output (no further padding) and instance boxes."""
    lsj = {"augmentations": build_transform_gen(cfg, is_train), "size_divisibility": 0}
    return {**args, **lsj, "with_boxes": True}


class COCOInstanceNewBaselineDatasetMapper(MaskFormerInstanceDatasetMapper):
    """
    :class:`MaskFormerInstanceDatasetMapper` with large-scale jitter (flip, ResizeScale,
    FixedSizeCrop): "image" is exactly (3, IMAGE_SIZE, IMAGE_SIZE), and "instances" also has
    gt_boxes (N, 4), the XYXY boxes of the (cropped) masks.
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        return lsj_mapper_args(super().from_config(cfg, is_train), cfg, is_train)
