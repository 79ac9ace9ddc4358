"""Training mapper for COCO-style instance segmentation datasets ("mask_former_instance")."""

import copy
from typing import Any, Dict

import torch.nn.functional as F
from detectron2.data import transforms as T
from detectron2.structures import Instances

from .base import TrainMapperBase
from .common import annotations_to_mask_instances, image_to_tensor, pad_bottom_right

__all__ = ["MaskFormerInstanceDatasetMapper"]


def _pad_instances(instances: Instances, hw) -> Instances:
    """The same instances on a canvas padded on the bottom/right to `hw`; masks padded with False."""
    if tuple(instances.image_size) == tuple(hw):
        return instances
    fields = instances.get_fields()
    padded = Instances(tuple(hw), **fields)
    masks = fields["gt_masks"]
    padded.gt_masks = F.pad(
        masks, (0, hw[1] - masks.shape[2], 0, hw[0] - masks.shape[1]), value=False
    )
    return padded


class MaskFormerInstanceDatasetMapper(TrainMapperBase):
    """
    Maps a COCO instance dataset dict ("file_name", "annotations" with polygon or RLE
    "segmentation" and contiguous "category_id") to:

    * "image": (3, H, W) uint8 tensor, padded with 0 to cfg.INPUT.SIZE_DIVISIBILITY;
    * "instances": gt_classes (N,) int64, gt_masks (N, H, W) bool (and gt_boxes (N, 4) XYXY of
      the masks with `with_boxes`); crowd annotations and instances a crop removed are dropped.

    Augmentations: resize shortest edge, optional plain random crop, optional SSD color jitter,
    flip.
    """

    task = "instance"
    # COCO instance annotations give no semantic map to constrain a crop with
    category_area_crop = False

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        if "annotations" not in dataset_dict:
            raise KeyError(
                f"{type(self).__name__}: dataset dict of {file_name} has no 'annotations'"
            )
        annos = dataset_dict.pop("annotations")

        image = self._read_image(dataset_dict)
        original_hw = image.shape[:2]
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        instances, num_before = annotations_to_mask_instances(
            annos,
            transforms,
            original_hw,
            image.shape[:2],
            self.num_classes,
            file_name,
            self.with_boxes,
        )
        self.dropped_instances.update(num_before, len(instances), file_name)

        hw = self._padded_size(image.shape[:2])
        dataset_dict["image"] = image_to_tensor(pad_bottom_right(image, hw, 0))
        dataset_dict["instances"] = _pad_instances(instances, hw)
        return dataset_dict
