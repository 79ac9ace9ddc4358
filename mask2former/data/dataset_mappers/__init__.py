"""Dataset mappers: dataset dict -> model input (image, and sem_seg / instances in training)."""

from .color_aug_ssd import ColorAugSSDTransform, SSDColorJitter
from .coco_instance_new_baseline_dataset_mapper import COCOInstanceNewBaselineDatasetMapper
from .coco_panoptic_new_baseline_dataset_mapper import COCOPanopticNewBaselineDatasetMapper
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper
from .test_dataset_mapper import MaskFormerTestDatasetMapper

__all__ = [
    "ColorAugSSDTransform",
    "SSDColorJitter",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
    "MaskFormerTestDatasetMapper",
]
