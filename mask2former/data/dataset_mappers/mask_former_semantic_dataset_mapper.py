"""Training mapper for semantic segmentation datasets ("mask_former_semantic")."""

import copy
from typing import Any, Dict, Tuple

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.structures import Instances

from .base import TrainMapperBase, to_transformable_labels
from .common import (
    check_labels_match_image,
    check_semantic_labels,
    image_to_tensor,
    pad_bottom_right,
    read_label_checked,
    semantic_to_instances,
)

__all__ = ["MaskFormerSemanticDatasetMapper"]


class MaskFormerSemanticDatasetMapper(TrainMapperBase):
    """
    Maps a semantic segmentation dataset dict ("file_name", "sem_seg_file_name") to:

    * "image": (3, H, W) uint8 tensor in cfg.INPUT.FORMAT, padded with 0 on the bottom/right
      to a multiple of cfg.INPUT.SIZE_DIVISIBILITY (when > 0);
    * "sem_seg": (H, W) int64 tensor, padding = the ignore label;
    * "instances": one instance per class present (ignore excluded): gt_classes (N,) int64,
      gt_masks (N, H, W) bool;
    * "height", "width": of the original image, and the input fields.

    Subclasses that read other labels override :meth:`_read_labels` and :meth:`_targets`;
    ``__call__`` (read, augment, pad, report) is shared.
    """

    task = "semantic"
    # the dataset dict field of the label file read by _read_labels
    label_file_key = "sem_seg_file_name"

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read_image(dataset_dict)
        sem_seg, labels = self._read_labels(dataset_dict)
        check_labels_match_image(
            image.shape[:2],
            sem_seg.shape,
            dataset_dict["file_name"],
            dataset_dict[self.label_file_key],
        )
        aug_input = T.AugInput(image, sem_seg=to_transformable_labels(sem_seg))
        transforms = self.augmentations(aug_input)
        hw = self._padded_size(aug_input.image.shape[:2])
        sem_seg, instances, num_before = self._targets(aug_input.sem_seg, labels, transforms, hw)
        self.dropped_instances.update(num_before, len(instances), dataset_dict["file_name"])

        dataset_dict["image"] = image_to_tensor(pad_bottom_right(aug_input.image, hw, 0))
        dataset_dict["sem_seg"] = torch.as_tensor(sem_seg, dtype=torch.int64)
        dataset_dict["instances"] = instances
        return dataset_dict

    def _read_labels(self, dataset_dict: Dict[str, Any]) -> Tuple[np.ndarray, Any]:
        """
        Returns:
            (H, W) semantic labels of the untransformed image (used by the category-area
            crop), and whatever :meth:`_targets` needs besides their transformed version.
        """
        file_name = dataset_dict.get(self.label_file_key)
        if file_name is None:
            raise KeyError(
                f"{type(self).__name__}: dataset dict of {dataset_dict['file_name']} has no "
                f"{self.label_file_key!r}"
            )
        sem_seg = read_label_checked(file_name, "sem_seg")
        if sem_seg.ndim != 2:
            raise ValueError(
                f"{file_name}: a semantic label PNG must have one channel, got {sem_seg.shape}"
            )
        check_semantic_labels(sem_seg, self.num_classes, self.ignore_label, file_name)
        return sem_seg, int(np.count_nonzero(np.unique(sem_seg) != self.ignore_label))

    def _targets(
        self, sem_seg: np.ndarray, labels: Any, transforms: T.TransformList, hw: Tuple[int, int]
    ) -> Tuple[np.ndarray, Instances, int]:
        """
        Args:
            sem_seg: (h, w) transformed semantic labels, before padding.
            labels: what :meth:`_read_labels` returned besides the semantic labels.
            transforms: the augmentation's transforms, for other label maps.
            hw: the padded (H, W).

        Returns:
            (H, W) int64 semantic labels, the Instances, and how many instances there were
            before augmentation.
        """
        sem_seg = pad_bottom_right(sem_seg.astype(np.int64), hw, self.ignore_label)
        return sem_seg, semantic_to_instances(sem_seg, self.ignore_label, self.with_boxes), labels
