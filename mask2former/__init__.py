"""
Mask2Former as a detectron2 extension. Importing it registers every component (meta-architecture,
heads, pixel and transformer decoders, Swin backbone) and the built-in datasets.

The top-level names are those of the original ``mask2former`` package, so that training scripts
written for it run unchanged.
"""
from . import data, modeling  # noqa: F401  (registers datasets and model components)
from .config import add_maskformer2_config
from .data.dataset_mappers.coco_instance_new_baseline_dataset_mapper import COCOInstanceNewBaselineDatasetMapper
from .data.dataset_mappers.coco_panoptic_new_baseline_dataset_mapper import COCOPanopticNewBaselineDatasetMapper
from .data.dataset_mappers.mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .data.dataset_mappers.mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .data.dataset_mappers.mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper
from .evaluation.instance_evaluation import InstanceSegEvaluator
from .maskformer_model import MaskFormer
from .test_time_augmentation import SemanticSegmentorWithTTA

__all__ = [
    "add_maskformer2_config",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
    "InstanceSegEvaluator",
    "MaskFormer",
    "SemanticSegmentorWithTTA",
]
