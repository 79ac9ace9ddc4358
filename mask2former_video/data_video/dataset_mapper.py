"""
Mappers from video dataset dicts to model inputs: clips of sampled frames (training) or whole
videos (test), and pseudo-clips made from COCO instance images.

Objects keep their identity across the frames of a clip: every frame's Instances lists the
same objects in the same order (all the non-crowd objects present in at least one sampled
frame); where an object is absent, its ``gt_ids`` is -1 and its mask empty.
"""
import copy
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances

from mask2former.data.dataset_mappers.common import annotation_mask, image_to_tensor, read_image_checked

from .augmentation import build_augmentation

__all__ = ["YTVISDatasetMapper", "CocoClipDatasetMapper", "filter_empty_instances", "ytvis_annotations_to_instances"]

logger = logging.getLogger(__name__)


def filter_empty_instances(
    instances: Instances, by_box: bool = True, by_mask: bool = True, box_threshold: float = 1e-5
) -> Instances:
    """
    Marks instances with an empty box or mask as absent (``gt_ids`` = -1) instead of removing
    them, so that every frame of a clip keeps the same objects in the same order.
    """
    keep = torch.ones(len(instances), dtype=torch.bool)
    if by_box:
        keep &= instances.gt_boxes.nonempty(threshold=box_threshold)
    if by_mask and instances.has("gt_masks"):
        keep &= instances.gt_masks.nonempty()
    instances.gt_ids[~keep] = -1
    return instances


def ytvis_annotations_to_instances(
    annos: Sequence[Dict], image_size: Tuple[int, int], with_masks: Optional[bool] = None
) -> Instances:
    """
    Args:
        annos: one dict per object, in track order, each with "id" and "category_id"; an
            object present in the frame also has "bbox", "bbox_mode" and, for masks,
            "segmentation" (polygons, RLE or an (H, W) array), transformed to the image.
        image_size: (H, W).
        with_masks: give gt_masks (empty where absent, also when no object of the clip is in
            this frame); None: when some object has a "segmentation".

    Returns:
        Instances with gt_ids (-1 for absent objects), gt_classes (the object's class, also
        where it is absent, so any frame gives the clip's labels), gt_boxes (of the masks when
        there are masks; zeros for absent objects) and gt_masks (BitMasks, empty where absent).
    """
    h, w = image_size
    present = ["bbox" in a for a in annos]
    target = Instances(image_size)
    target.gt_ids = torch.tensor([a["id"] if p else -1 for a, p in zip(annos, present)], dtype=torch.int64)
    target.gt_classes = torch.tensor([a["category_id"] for a in annos], dtype=torch.int64)
    boxes = [
        BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) if p else [0.0] * 4
        for a, p in zip(annos, present)
    ]
    target.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    if with_masks is None:
        with_masks = any("segmentation" in a for a in annos)
    if with_masks:
        masks = [
            annotation_mask(a["segmentation"], (h, w), f"object {a['id']}")
            if "segmentation" in a
            else np.zeros((h, w), np.uint8)
            for a in annos
        ]
        masks = np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)
        target.gt_masks = BitMasks(torch.from_numpy(masks).bool())
        target.gt_boxes = target.gt_masks.get_bounding_boxes()
    return target


def _as_rle(segm: Any, size: Tuple[int, int], where: str) -> Dict:
    """A segmentation as compressed RLE, which detectron2 transforms without shapely."""
    if isinstance(segm, dict) and not isinstance(segm.get("counts"), list):
        return segm
    return mask_util.encode(np.asfortranarray(annotation_mask(segm, size, where)))


def _clip_instances(
    frame_annos: Sequence[Sequence[Dict]],
    transforms: Sequence[T.TransformList],
    original_size: Tuple[int, int],
    image_size: Tuple[int, int],
    use_mask: bool,
    num_classes: Optional[int],
    where: str,
) -> List[Instances]:
    """
    Per-frame Instances of a clip: `frame_annos[t]` are frame t's object dicts (with "id")
    and `transforms[t]` its transforms, from `original_size` to `image_size`. Crowd objects
    are left out. Polygons become RLE before the transforms (cropping polygons needs shapely).
    """
    categories: Dict[Any, int] = {}  # track id -> contiguous class, in order of first appearance
    for annos in frame_annos:
        for a in annos:
            if not a.get("iscrowd", 0):
                categories.setdefault(a["id"], a["category_id"])
    bad = [c for c in categories.values() if num_classes is not None and not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"{where}: category_id {bad[0]} is not in [0, {num_classes}) (MODEL.SEM_SEG_HEAD.NUM_CLASSES)")
    clip = []
    for annos, tfm in zip(frame_annos, transforms):
        by_id = {a["id"]: a for a in annos if not a.get("iscrowd", 0)}
        objects = []
        for track_id, category in categories.items():
            if track_id not in by_id:
                objects.append({"id": track_id, "category_id": category})
                continue
            obj = copy.deepcopy(by_id[track_id])
            if not use_mask:
                obj.pop("segmentation", None)
            elif "segmentation" in obj:
                obj["segmentation"] = _as_rle(obj["segmentation"], original_size, where)
            objects.append(utils.transform_instance_annotations(obj, tfm, image_size))
        clip.append(filter_empty_instances(ytvis_annotations_to_instances(objects, image_size, use_mask)))
    return clip


def _apply_augmentations(augmentations: Sequence[T.Augmentation], image: np.ndarray):
    aug_input = T.AugInput(image)
    transforms = T.AugmentationList(list(augmentations))(aug_input)
    return aug_input.image, transforms


class YTVISDatasetMapper:
    """
    Maps a YouTube-VIS video dict (see ``load_ytvis_json``) to a clip. Training: a random
    reference frame and ``sampling_frame_num - 1`` others drawn with replacement within
    ``sampling_frame_range`` of it (so a short video gives repeated frames), sorted, shuffled
    only if ``sampling_frame_shuffle``. Test: every frame, no instances. One draw of the
    augmentations per clip, applied to every frame.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,  # "RGB" or "BGR" (INPUT.FORMAT)
        use_instance_mask: bool = True,
        sampling_frame_num: int = 2,
        sampling_frame_range: int = 5,
        sampling_frame_shuffle: bool = False,
        num_classes: Optional[int] = None,
    ):
        if sampling_frame_num < 1 or sampling_frame_range < 0:
            raise ValueError(
                f"sampling_frame_num ({sampling_frame_num}) must be >= 1 and "
                f"sampling_frame_range ({sampling_frame_range}) >= 0"
            )
        self.is_train = is_train
        self.augmentations = list(augmentations)
        self.image_format = image_format
        self.use_instance_mask = use_instance_mask
        self.sampling_frame_num = sampling_frame_num
        self.sampling_frame_range = sampling_frame_range
        self.sampling_frame_shuffle = sampling_frame_shuffle
        self.num_classes = num_classes
        logger.info(f"[{type(self).__name__}] augmentations ({'train' if is_train else 'test'}): {self.augmentations}")

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict[str, Any]:
        return {
            "is_train": is_train,
            "augmentations": build_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "use_instance_mask": cfg.MODEL.MASK_ON,
            "sampling_frame_num": cfg.INPUT.SAMPLING_FRAME_NUM,
            "sampling_frame_range": cfg.INPUT.SAMPLING_FRAME_RANGE,
            "sampling_frame_shuffle": cfg.INPUT.SAMPLING_FRAME_SHUFFLE,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def sample_frames(self, length: int) -> List[int]:
        """Indices of the frames of one training clip of a `length`-frame video."""
        ref = int(np.random.randint(length))
        lo, hi = max(0, ref - self.sampling_frame_range), min(length, ref + self.sampling_frame_range + 1)
        others = [i for i in range(lo, hi) if i != ref] or [ref]
        picked = np.random.choice(others, self.sampling_frame_num - 1).tolist() + [ref]
        picked = sorted(int(i) for i in picked)
        if self.sampling_frame_shuffle:
            np.random.shuffle(picked)
        return picked

    def _read_frames(self, video: Dict, frame_idx: Sequence[int]) -> List[np.ndarray]:
        frames = []
        for i in frame_idx:
            file_name = video["file_names"][i]
            image = read_image_checked(file_name, self.image_format)
            if image.shape[:2] != (video["height"], video["width"]):
                raise ValueError(
                    f"Video {video['video_id']}: frame {i} ({file_name}) is {image.shape[1]}x{image.shape[0]}, "
                    f"but the video is {video['width']}x{video['height']} (width x height)"
                )
            frames.append(image)
        return frames

    def __call__(self, dataset_dict: Dict) -> Dict:
        video = copy.deepcopy(dataset_dict)
        length = video.get("length", len(video["file_names"]))
        if length == 0 or len(video["file_names"]) != length:
            raise ValueError(
                f"Video {video.get('video_id')}: length {length} with {len(video['file_names'])} frames; "
                "a video needs at least one frame and one file name per frame"
            )
        frame_idx = self.sample_frames(length) if self.is_train else list(range(length))
        frames = self._read_frames(video, frame_idx)
        image, transforms = _apply_augmentations(self.augmentations, frames[0])
        images = [image] + [transforms.apply_image(f) for f in frames[1:]]
        annotations = video.pop("annotations", None)
        video["image"] = [image_to_tensor(im) for im in images]
        video["file_names"] = [video["file_names"][i] for i in frame_idx]
        video["frame_idx"] = frame_idx
        if self.is_train and annotations is not None:
            video["instances"] = _clip_instances(
                [annotations[i] for i in frame_idx],
                [transforms] * len(frame_idx),
                frames[0].shape[:2],
                images[0].shape[:2],
                self.use_instance_mask,
                self.num_classes,
                f"video {video['video_id']}",
            )
        return video


class CocoClipDatasetMapper(YTVISDatasetMapper):
    """
    Turns a COCO instance image dict (detectron2's ``load_coco_json``) into a pseudo-clip of
    ``sampling_frame_num`` frames: the same image, augmented independently for every frame
    (its own resize, crop, flip), with the same objects (track id = index among the image's
    non-crowd annotations). Frames of one pseudo-clip may differ in size. Takes the arguments
    of :class:`YTVISDatasetMapper` (the frame range and shuffle are unused).
    """

    def __call__(self, dataset_dict: Dict) -> Dict:
        record = copy.deepcopy(dataset_dict)
        file_name = record["file_name"]
        image = read_image_checked(file_name, self.image_format)
        utils.check_image_size(record, image)
        annotations = [dict(a, id=i) for i, a in enumerate(a for a in record.pop("annotations", []) if not a.get("iscrowd", 0))]
        num = self.sampling_frame_num
        frames, transforms = zip(*(_apply_augmentations(self.augmentations, image) for _ in range(num)))
        clip = {
            "image": [image_to_tensor(f) for f in frames],
            "height": record["height"],
            "width": record["width"],
            "length": num,
            "video_id": record.get("image_id"),
            "file_names": [file_name] * num,
            "frame_idx": list(range(num)),
        }
        if self.is_train:
            clip["instances"] = [
                _clip_instances([annotations], [tfm], image.shape[:2], f.shape[:2], self.use_instance_mask, self.num_classes, file_name)[0]
                for f, tfm in zip(frames, transforms)
            ]
        return clip
