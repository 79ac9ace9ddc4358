"""
Pieces shared by the training mappers: checked file reading, padding, and turning semantic,
panoptic or COCO instance labels into the targets Mask2Former trains on.
"""

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances, polygons_to_bitmask
from detectron2.utils.file_io import PathManager
from panopticapi.utils import rgb2id
from PIL import ExifTags, Image, ImageOps
from pycocotools import mask as mask_util

__all__ = [
    "read_image_checked",
    "read_label_checked",
    "check_labels_match_image",
    "image_to_tensor",
    "padded_size",
    "pad_bottom_right",
    "check_semantic_labels",
    "check_panoptic_segments",
    "panoptic_to_semantic",
    "panoptic_to_instances",
    "semantic_to_instances",
    "annotation_mask",
    "annotations_to_mask_instances",
    "make_instances",
    "DroppedInstancesReporter",
    "is_report_count",
    "rgb2id",
]

logger = logging.getLogger(__name__)


# PIL modes of 16-bit (and 32-bit integer) single-channel images
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_8bit(image: Image.Image, file_name: str) -> Image.Image:
    """
    A 16-bit grayscale image (PIL mode "I;16*", or "I" holding values in 0..65535) as 8-bit
    "L", keeping the high byte (v >> 8), which is what PIL does for 16-bit RGB PNGs and OpenCV
    for any 16-bit image. PIL's own conversion of these modes to RGB clips every value above
    255 to white instead. Other integer ranges and float images are rejected.
    """
    if image.mode in _WIDE_INTEGER_MODES:
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"{file_name}: integer image (PIL mode {image.mode}) with values in "
                f"{values.min()}..{values.max()}; only 8- and 16-bit images are supported"
            )
        return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8), mode="L")
    if image.mode == "F":
        raise ValueError(
            f"{file_name}: floating-point image (PIL mode F) is not supported; "
            "store it as an 8- or 16-bit image"
        )
    return image


def read_image_checked(file_name: str, image_format: Optional[str]) -> np.ndarray:
    """
    :func:`detection_utils.read_image` (EXIF orientation applied, any PIL mode converted to
    `image_format`: gray g -> (g, g, g), alpha dropped, palette looked up), except that 16-bit
    images are scaled to 8 bits (see :func:`_to_8bit`) rather than clipped. Errors name the file.

    Returns:
        (H, W, C) uint8 array in `image_format`.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()  # decode now: truncated or corrupt data fails here
            # the same transposes as detectron2's read_image, which its evaluation mapper uses
            image = ImageOps.exif_transpose(image)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"Image file not found: {file_name}") from e
    except Exception as e:  # PIL's UnidentifiedImageError, truncated files, ...
        raise OSError(f"Cannot read image file {file_name}: {e}") from e
    return utils.convert_PIL_to_numpy(_to_8bit(image, file_name), image_format)


def exif_orientation(file_name: str) -> int:
    """The EXIF orientation tag of an image file (1, "as stored", when absent or unreadable)."""
    try:
        with PathManager.open(file_name, "rb") as f:
            return int(Image.open(f).getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:
        return 1


def read_label_checked(file_name: str, kind: str) -> np.ndarray:
    """
    Reads a label PNG as stored (mode "L" → (H, W) uint8, RGB → (H, W, 3) uint8) with errors
    naming the file; `kind` ("sem_seg", "pan_seg") says which dataset field it came from.
    """
    try:
        return utils.read_image(file_name)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{kind} file not found: {file_name}") from e
    except Exception as e:
        raise OSError(f"Cannot read {kind} file {file_name}: {e}") from e


def check_labels_match_image(
    image_hw: Tuple[int, int], labels_hw: Tuple[int, int], image_file: str, label_file: str
) -> None:
    """Raises ValueError naming both files and sizes when a label map and its image differ."""
    if tuple(image_hw) == tuple(labels_hw):
        return
    hint = ""
    orientation = exif_orientation(image_file)
    if orientation != 1:
        hint = (
            f"; the image has EXIF orientation {orientation}, applied when it is read: the "
            "labels must be drawn on the image as displayed, not as stored"
        )
    raise ValueError(
        f"Image {image_file} is {image_hw[0]}x{image_hw[1]} (HxW) but its labels {label_file} "
        f"are {labels_hw[0]}x{labels_hw[1]}{hint}"
    )


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) image array -> (C, H, W) tensor of its dtype (uint8 for read images)."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def padded_size(hw: Tuple[int, int], size_divisibility: int) -> Tuple[int, int]:
    """(H, W) rounded up to multiples of `size_divisibility` (unchanged when it is <= 0)."""
    if size_divisibility <= 0:
        return tuple(hw)
    d = size_divisibility
    return (-(-hw[0] // d) * d, -(-hw[1] // d) * d)


def pad_bottom_right(array: np.ndarray, hw: Tuple[int, int], value) -> np.ndarray:
    """Pads the first two dims of `array` ((H, W) or (H, W, C)) on the bottom/right up to `hw`."""
    pad = [(0, hw[0] - array.shape[0]), (0, hw[1] - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
    if pad[0][1] == 0 and pad[1][1] == 0:
        return array
    return np.pad(array, pad, mode="constant", constant_values=value)


def check_semantic_labels(
    sem_seg: np.ndarray, num_classes: Optional[int], ignore_label: int, file_name: str
) -> None:
    """Raises if `sem_seg` holds a label that is neither a class (< num_classes) nor ignored."""
    if num_classes is None:
        return
    labels = np.unique(sem_seg)
    bad = labels[(labels != ignore_label) & ((labels < 0) | (labels >= num_classes))]
    if len(bad):
        raise ValueError(
            f"{file_name}: labels {bad.tolist()} are not category ids of the metadata "
            f"(0..{num_classes - 1}, ignore {ignore_label})"
        )


def check_panoptic_segments(
    pan_ids: np.ndarray, segments_info: Sequence[Dict], num_classes: Optional[int], file_name: str
) -> None:
    """
    Checks the segments of an untransformed panoptic id map (H, W): every segment id of
    `segments_info` occurs in the map, and every category id is a known contiguous id.
    """
    present = set(np.unique(pan_ids).tolist())
    for seg in segments_info:
        if seg["id"] not in present:
            raise ValueError(
                f"{file_name}: segment id {seg['id']} of segments_info is absent from the PNG"
            )
        cat = seg["category_id"]
        if num_classes is not None and not 0 <= cat < num_classes:
            raise ValueError(
                f"{file_name}: segment {seg['id']} has category id {cat}, not among the "
                f"metadata's {num_classes} classes"
            )


def panoptic_to_semantic(
    pan_ids: np.ndarray, segments_info: Sequence[Dict], ignore_label: int
) -> np.ndarray:
    """(H, W) int64 semantic labels from a panoptic id map; unlabeled and crowd → ignore."""
    sem_seg = np.full(pan_ids.shape, ignore_label, dtype=np.int64)
    for seg in segments_info:
        if not seg.get("iscrowd", 0):
            sem_seg[pan_ids == seg["id"]] = seg["category_id"]
    return sem_seg


def make_instances(
    image_hw: Tuple[int, int], classes: Sequence[int], masks: Sequence[np.ndarray], with_boxes: bool
) -> Instances:
    """
    Instances with gt_classes (N,) int64, gt_masks (N, H, W) bool and, if `with_boxes`,
    gt_boxes (N, 4) XYXY boxes of the masks. Instances whose mask is empty are dropped.
    """
    keep = [i for i, m in enumerate(masks) if m.any()]
    instances = Instances(tuple(image_hw))
    instances.gt_classes = torch.tensor([int(classes[i]) for i in keep], dtype=torch.int64)
    if keep:
        gt_masks = torch.from_numpy(
            np.stack([np.ascontiguousarray(masks[i], dtype=bool) for i in keep])
        )
    else:
        gt_masks = torch.zeros((0, *image_hw), dtype=torch.bool)
    instances.gt_masks = gt_masks
    if with_boxes:
        instances.gt_boxes = (
            BitMasks(gt_masks).get_bounding_boxes() if keep else Boxes(torch.zeros(0, 4))
        )
    return instances


def panoptic_to_instances(
    pan_ids: np.ndarray, segments_info: Sequence[Dict], with_boxes: bool = False
) -> Instances:
    """One instance per non-crowd segment (things and stuff) of a panoptic id map (H, W)."""
    segments = [s for s in segments_info if not s.get("iscrowd", 0)]
    return make_instances(
        pan_ids.shape,
        [s["category_id"] for s in segments],
        [pan_ids == s["id"] for s in segments],
        with_boxes,
    )


def semantic_to_instances(
    sem_seg: np.ndarray, ignore_label: int, with_boxes: bool = False
) -> Instances:
    """One instance per class present in a semantic map (H, W), except the ignore label."""
    classes = [int(c) for c in np.unique(sem_seg) if c != ignore_label]
    return make_instances(sem_seg.shape, classes, [sem_seg == c for c in classes], with_boxes)


def annotation_mask(segm, hw: Tuple[int, int], file_name: str) -> np.ndarray:
    """(H, W) uint8 mask of a COCO segmentation: polygons, RLE (compressed or not), or array."""
    if isinstance(segm, list):
        return polygons_to_bitmask(segm, *hw).astype(np.uint8)
    elif isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):  # uncompressed RLE
            segm = mask_util.frPyObjects(segm, *segm["size"])
        mask = mask_util.decode(segm)
    elif isinstance(segm, np.ndarray) and segm.ndim == 2:
        mask = segm.astype(np.uint8)
    else:
        raise ValueError(f"{file_name}: unsupported segmentation of type {type(segm).__name__}")
    if mask.shape != tuple(hw):
        raise ValueError(
            f"{file_name}: a segmentation mask of size {mask.shape} for an image of size {hw}"
        )
    return mask


def annotations_to_mask_instances(
    annos: List[Dict],
    transforms: T.TransformList,
    original_hw: Tuple[int, int],
    image_hw: Tuple[int, int],
    num_classes: Optional[int],
    file_name: str,
    with_boxes: bool = False,
) -> Tuple[Instances, int]:
    """
    Rasterises COCO instance annotations (polygons or RLE, contiguous category ids) at the
    original size `original_hw` and transforms the masks like a segmentation (nearest) to
    `image_hw`. Rasterising first keeps crops exact without a polygon-clipping dependency.
    Crowd annotations are skipped.

    Returns:
        (Instances, int): the non-empty instances, and how many non-crowd annotations there
        were before transforming (to tell when a crop removed them all).
    """
    annos = [a for a in annos if not a.get("iscrowd", 0)]
    masks, classes = [], []
    for i, a in enumerate(annos):
        if "segmentation" not in a:
            raise KeyError(f"{file_name}: annotation {i} has no 'segmentation'")
        cat = a["category_id"]
        if num_classes is not None and not 0 <= cat < num_classes:
            raise ValueError(
                f"{file_name}: annotation with category id {cat}, not among the metadata's "
                f"{num_classes} thing classes"
            )
        mask = transforms.apply_segmentation(
            annotation_mask(a["segmentation"], original_hw, file_name)
        )
        assert mask.shape == tuple(image_hw), (mask.shape, image_hw)
        masks.append(mask.astype(bool))
        classes.append(cat)
    return make_instances(image_hw, classes, masks, with_boxes), len(annos)


def is_report_count(count: int) -> bool:
    """Whether the `count`-th occurrence of a warning is logged: the 1st, 2nd, 4th, 8th, ..."""
    return count > 0 and count & (count - 1) == 0


class DroppedInstancesReporter:
    """
    Counts samples whose augmentation (a crop) removed every instance, and logs a warning
    the 1st, 2nd, 4th, 8th, ... time, so that it is visible without flooding the log.
    """

    def __init__(self, mapper_name: str):
        self.mapper_name = mapper_name
        self.count = 0

    def update(self, num_before: int, num_after: int, file_name: str) -> None:
        if num_before == 0 or num_after > 0:
            return
        self.count += 1
        if is_report_count(self.count):
            logger.warning(
                "%s: augmentation removed all %d instances of %s (%d sample(s) so far); "
                "the sample is kept with no instance",
                self.mapper_name,
                num_before,
                file_name,
                self.count,
            )
