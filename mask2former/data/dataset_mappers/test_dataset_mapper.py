"""The evaluation mapper: detectron2's DatasetMapper with the training mappers' checked reading."""

import copy
from typing import Dict

from detectron2.config import CfgNode
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .base import NonEmptyResize
from .common import image_to_tensor, read_image_checked

__all__ = ["MaskFormerTestDatasetMapper"]


class MaskFormerTestDatasetMapper(DatasetMapper):
    """
    detectron2's ``DatasetMapper(cfg, is_train=False)`` (resize the shortest edge to
    INPUT.MIN_SIZE_TEST; "image", "height", "width" for the model), except that the image is
    read like the training mappers read it: errors name the file, 16-bit images keep their
    high byte instead of turning white, and a resize never makes a side 0 pixels.
    """

    def __init__(self, cfg: CfgNode):
        super().__init__(cfg, is_train=False)
        self.augmentations = T.AugmentationList(
            [NonEmptyResize(a) if isinstance(a, T.ResizeShortestEdge) else a
             for a in self.augmentations.augs]
        )

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image_checked(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        # evaluators read the ground truth from the files themselves
        dataset_dict.pop("annotations", None)
        dataset_dict.pop("sem_seg_file_name", None)
        return dataset_dict
