"""Large-scale-jitter training mapper for COCO panoptic segmentation ("coco_panoptic_lsj")."""

from typing import Any, Dict

from .coco_instance_new_baseline_dataset_mapper import build_transform_gen, lsj_mapper_args
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper

__all__ = ["COCOPanopticNewBaselineDatasetMapper", "build_transform_gen"]


class COCOPanopticNewBaselineDatasetMapper(MaskFormerPanopticDatasetMapper):
    """
    :class:`MaskFormerPanopticDatasetMapper` with large-scale jitter (flip, ResizeScale,
    FixedSizeCrop): "image" is exactly (3, IMAGE_SIZE, IMAGE_SIZE); "instances" (one per
    non-crowd segment) also has gt_boxes (N, 4); "sem_seg" is 255 where unlabeled, crowd or
    padded.
    """

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        return lsj_mapper_args(super().from_config(cfg, is_train), cfg, is_train)
