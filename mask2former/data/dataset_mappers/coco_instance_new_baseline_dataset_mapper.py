"""Large-scale-jitter training mapper for COCO instance segmentation ("coco_instance_lsj")."""

from typing import Any, Dict

from .base import build_lsj_augmentations
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper

__all__ = ["COCOInstanceNewBaselineDatasetMapper"]


class COCOInstanceNewBaselineDatasetMapper(MaskFormerInstanceDatasetMapper):
    """
    :class:`MaskFormerInstanceDatasetMapper` with large-scale jitter (flip, ResizeScale,
    FixedSizeCrop): "image" is exactly (3, IMAGE_SIZE, IMAGE_SIZE), and "instances" also has
    gt_boxes (N, 4), the XYXY boxes of the (cropped) masks.
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        ret = super().from_config(cfg, is_train)
        ret.update(augmentations=build_lsj_augmentations(cfg), size_divisibility=0, with_boxes=True)
        return ret
