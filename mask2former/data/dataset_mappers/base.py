"""The augmentation lists read from the config, and the part every training mapper shares."""

import logging
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from detectron2.config import CfgNode, configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..datasets.checks import check_num_classes, dataset_num_classes
from .color_aug_ssd import ColorAugSSDTransform
from .common import DroppedInstancesReporter, padded_size, read_image_checked

__all__ = [
    "NonEmptyResize",
    "TrainMapperBase",
    "build_mask_former_augmentations",
    "build_lsj_augmentations",
    "train_metadata",
    "train_num_classes",
    "to_transformable_labels",
]

logger = logging.getLogger(__name__)


def train_metadata(cfg: CfgNode):
    """Metadata of the first training dataset: the source of the ignore label and class count."""
    if not cfg.DATASETS.TRAIN:
        raise ValueError("cfg.DATASETS.TRAIN is empty: the training mappers read its metadata")
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0])


def train_num_classes(cfg: CfgNode, task: str) -> Optional[int]:
    """
    The class count of the training datasets' metadata for `task` ("semantic" and "panoptic":
    len(stuff_classes), "instance": len(thing_classes)), or None when the first one has no
    such list (labels then go unchecked).

    Raises:
        ValueError: a training dataset whose class count is not MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            which would otherwise surface as an index error deep in the loss, or never.
    """
    train_metadata(cfg)  # DATASETS.TRAIN must not be empty

    def count(name: str) -> Optional[int]:
        try:
            return dataset_num_classes(name, task)
        except KeyError:  # a dataset registered without class names
            return None

    known = [name for name in cfg.DATASETS.TRAIN if count(name) is not None]
    check_num_classes(known, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, task)
    return count(cfg.DATASETS.TRAIN[0])


class NonEmptyResize(T.Augmentation):
    """
    A resizing augmentation whose output keeps at least 1 pixel per side: detectron2 rounds
    e.g. a 16x1000 image scaled by 0.01 to 0x10, which PIL cannot resize to.
    """

    def __init__(self, resize: T.Augmentation):
        super().__init__()
        self.resize = resize

    def get_transform(self, image: np.ndarray) -> T.Transform:
        t = self.resize.get_transform(image)
        if isinstance(t, T.ResizeTransform) and min(t.new_h, t.new_w) < 1:
            t = T.ResizeTransform(t.h, t.w, max(t.new_h, 1), max(t.new_w, 1), t.interp)
        return t

    def __repr__(self) -> str:
        return repr(self.resize)


def _flip(cfg: CfgNode) -> List[T.Augmentation]:
    mode = cfg.INPUT.RANDOM_FLIP
    if mode == "none":
        return []
    if mode not in ("horizontal", "vertical"):
        raise ValueError(
            f"cfg.INPUT.RANDOM_FLIP must be horizontal, vertical or none, got {mode!r}"
        )
    return [T.RandomFlip(horizontal=mode == "horizontal", vertical=mode == "vertical")]


def build_mask_former_augmentations(
    cfg: CfgNode, ignore_label: Optional[int], category_area_crop: bool = True
) -> List[T.Augmentation]:
    """
    Resize the shortest edge, crop (if cfg.INPUT.CROP.ENABLED), SSD color jitter (if
    cfg.INPUT.COLOR_AUG_SSD), flip. With `category_area_crop` the crop limits the area of a
    single category (cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA), which needs a semantic map.
    """
    augs: List[T.Augmentation] = [
        NonEmptyResize(
            T.ResizeShortestEdge(
                cfg.INPUT.MIN_SIZE_TRAIN,
                cfg.INPUT.MAX_SIZE_TRAIN,
                cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            )
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        if category_area_crop:
            augs.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.get("SINGLE_CATEGORY_MAX_AREA", 1.0),
                    ignore_label,
                )
            )
        else:
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    return augs + _flip(cfg)


def build_lsj_augmentations(cfg: CfgNode) -> List[T.Augmentation]:
    """
    Large-scale jitter: flip, rescale to a random fraction of IMAGE_SIZE (MIN_SCALE..MAX_SCALE),
    then crop/pad to exactly IMAGE_SIZE x IMAGE_SIZE. Segmentations are padded with 0:
    "no instance" for masks and "unlabeled" for panoptic ids.
    """
    size = cfg.INPUT.IMAGE_SIZE
    return _flip(cfg) + [
        NonEmptyResize(
            T.ResizeScale(
                min_scale=cfg.INPUT.MIN_SCALE,
                max_scale=cfg.INPUT.MAX_SCALE,
                target_height=size,
                target_width=size,
            )
        ),
        T.FixedSizeCrop(crop_size=(size, size), seg_pad_value=0),
    ]


def to_transformable_labels(labels: np.ndarray) -> np.ndarray:
    """
    detectron2's resize handles uint8 maps with PIL but others through torch's interpolate,
    which has no integer kernels: keep uint8 when the values fit, else use float64 (exact for
    integers up to 2^53).
    """
    if labels.dtype == np.uint8:
        return labels
    if labels.size and labels.min() >= 0 and labels.max() <= 255:
        return labels.astype(np.uint8)
    return labels.astype(np.float64)


class TrainMapperBase:
    """
    The constructor and config of every training mapper, reading and checking the image,
    padding sizes, and reporting crops that removed every instance. Subclasses set ``task``
    and define ``__call__``; all of them are for training only.
    """

    # the task whose class count (metadata) the labels and MODEL.SEM_SEG_HEAD.NUM_CLASSES follow
    task: str
    # whether the crop limits the area of a single category, which needs a semantic map
    category_area_crop = True

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        ignore_label: int = 255,
        size_divisibility: int = 0,
        num_classes: Optional[int] = None,
        with_boxes: bool = False,
    ):
        """
        Args:
            augmentations: applied to the image and labels, in order.
            image_format: detectron2 image format, e.g. "RGB" or "BGR".
            ignore_label: the label of unannotated pixels in semantic maps, also their padding.
            size_divisibility: pad to a multiple of this (<= 0: no padding).
            num_classes: labels / category ids must be < this (None: unchecked).
            with_boxes: also give instances gt_boxes (XYXY boxes of the masks).
        """
        name = type(self).__name__
        if not is_train:
            raise ValueError(
                f"{name} is a training mapper (is_train=False given); evaluate with "
                "detectron2's DatasetMapper(cfg, is_train=False)"
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        self.num_classes = num_classes
        self.with_boxes = with_boxes
        self.dropped_instances = DroppedInstancesReporter(name)
        logger.info(f"[{name}] Augmentations used in training: {augmentations}")

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict[str, Any]:
        ignore_label = train_metadata(cfg).get("ignore_label", 255)
        return {
            "is_train": is_train,
            "augmentations": build_mask_former_augmentations(
                cfg, ignore_label, category_area_crop=cls.category_area_crop
            ),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": train_num_classes(cfg, cls.task),
        }

    def _read_image(self, dataset_dict: dict) -> np.ndarray:
        """(H, W, 3) uint8 image in self.image_format; sets "height"/"width" if absent."""
        image = read_image_checked(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)
        return image

    def _padded_size(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        return padded_size(hw, self.size_divisibility)
