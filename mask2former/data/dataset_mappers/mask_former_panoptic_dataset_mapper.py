"""Training mapper for panoptic segmentation datasets ("mask_former_panoptic")."""

from typing import Any, Dict, Tuple

import numpy as np
from detectron2.data import transforms as T
from detectron2.structures import Instances

from .common import (
    check_panoptic_segments,
    pad_bottom_right,
    panoptic_to_instances,
    panoptic_to_semantic,
    read_label_checked,
    rgb2id,
)
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = ["MaskFormerPanopticDatasetMapper"]


class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """
    Maps a COCO-panoptic-style dataset dict ("file_name", "pan_seg_file_name",
    "segments_info" with contiguous category ids) to the same outputs as
    :class:`MaskFormerSemanticDatasetMapper`, with the same augmentations, except that:

    * "instances" has one instance per non-crowd segment, things and stuff
      (gt_classes = its category_id, gt_masks (N, H, W) bool); segments a crop removed are dropped;
    * "sem_seg" (H, W) int64 is derived from the panoptic PNG: unlabeled and crowd pixels, and
      padding, carry the ignore label.

    The PNG is transformed as RGB (uint8, nearest) and decoded to ids (rgb2id) afterwards,
    so that ids survive resizing exactly; its padding is 0, the "unlabeled" id.
    """

    task = "panoptic"
    label_file_key = "pan_seg_file_name"

    def _read_labels(self, dataset_dict: Dict[str, Any]) -> Tuple[np.ndarray, Any]:
        for key in (self.label_file_key, "segments_info"):
            if key not in dataset_dict:
                raise KeyError(
                    f"{type(self).__name__}: dataset dict of {dataset_dict['file_name']} has no {key!r}"
                )
        file_name = dataset_dict[self.label_file_key]
        pan_rgb = read_label_checked(file_name, "pan_seg")
        if pan_rgb.ndim != 3 or pan_rgb.shape[2] != 3:
            raise ValueError(
                f"{file_name}: a panoptic PNG must be RGB, got an array of shape {pan_rgb.shape}"
            )
        segments_info = dataset_dict["segments_info"]
        pan_ids = rgb2id(pan_rgb)
        check_panoptic_segments(pan_ids, segments_info, self.num_classes, file_name)
        # the semantic map only steers the category-area crop; targets come from the ids
        sem_seg = panoptic_to_semantic(pan_ids, segments_info, self.ignore_label)
        return sem_seg, (pan_rgb, segments_info)

    def _targets(
        self, sem_seg: np.ndarray, labels: Any, transforms: T.TransformList, hw: Tuple[int, int]
    ) -> Tuple[np.ndarray, Instances, int]:
        pan_rgb, segments_info = labels
        pan_ids = pad_bottom_right(rgb2id(transforms.apply_segmentation(pan_rgb)), hw, 0)
        sem_seg = panoptic_to_semantic(pan_ids, segments_info, self.ignore_label)
        instances = panoptic_to_instances(pan_ids, segments_info, with_boxes=self.with_boxes)
        num_before = sum(1 for s in segments_info if not s.get("iscrowd", 0))
        return sem_seg, instances, num_before
