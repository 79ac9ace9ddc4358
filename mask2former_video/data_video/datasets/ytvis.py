"""
Reading YouTube-VIS annotation files (the official JSON of the 2019 and 2021 challenges).

The JSON has ``videos`` ({"id", "file_names", "height", "width", "length"}), ``categories``
and, for annotated splits, ``annotations`` ({"id", "video_id", "category_id", "iscrowd",
"segmentations", "bboxes", "areas"}, the last three with one entry per frame, ``null`` where the
object is absent). Segmentations are RLE (compressed or uncompressed counts) or polygons.

Empty videos (no frames): in an annotated split they are skipped with a warning (there is
nothing to train on); in a split without annotations (a test split, whose every video must get
a prediction) they are an error naming the file and the video.
"""
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import pycocotools.mask as mask_util
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager

from mask2former.data.datasets.catalog import register_dataset

__all__ = ["load_ytvis_json", "register_ytvis_instances"]

logger = logging.getLogger(__name__)

_VIDEO_KEYS = ("id", "file_names", "height", "width")
_ANNOTATION_KEYS = ("id", "video_id", "category_id", "segmentations")


def _require(obj: Dict, keys: Sequence[str], what: str, json_file: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise KeyError(f"{json_file}: {what} lacks key(s) {missing}")


def _frame_segmentation(segm: Any, hw: Sequence[int], where: str) -> Any:
    """
    One frame's segmentation as compressed RLE or valid polygons; None when absent or empty.
    `where` names the file, annotation and frame in errors.
    """
    if segm is None:
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or list(segm.get("size", ())) != list(hw):
            raise ValueError(f"{where}: RLE {str(segm)[:80]} needs 'counts' and 'size' = {list(hw)} (the video's)")
        if isinstance(segm["counts"], list):  # uncompressed RLE
            segm = mask_util.frPyObjects(segm, *hw)
        return segm
    if not isinstance(segm, list) or not all(isinstance(p, list) for p in segm):
        raise ValueError(f"{where}: a segmentation must be RLE, a list of polygons or null, got {str(segm)[:80]}")
    polygons = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
    return polygons or None


def _frame_bbox(segm: Any, boxes: Optional[List], t: int, hw) -> List[float]:
    box = boxes[t] if boxes is not None and t < len(boxes) else None
    if box is not None:
        return [float(v) for v in box]
    rle = segm if isinstance(segm, dict) else mask_util.merge(mask_util.frPyObjects(segm, *hw))
    return [float(v) for v in mask_util.toBbox(rle)]


def _video_dicts(json_file: str, image_root: str, videos: List[Dict], annotated: bool) -> Dict[int, Dict]:
    dicts = {}
    for video in videos:
        _require(video, _VIDEO_KEYS, f"video {video.get('id', '?')}", json_file)
        file_names = video["file_names"]
        length = video.get("length", len(file_names))
        if length != len(file_names):
            raise ValueError(
                f"{json_file}: video {video['id']} has length {length} but {len(file_names)} file_names"
            )
        if length == 0:
            if not annotated:
                raise ValueError(
                    f"{json_file}: video {video['id']} has no frames; a test split needs every video"
                )
            logger.warning(f"{json_file}: skipping video {video['id']}, which has no frames")
            continue
        dicts[video["id"]] = {
            "file_names": [os.path.join(image_root, f) for f in file_names],
            "height": video["height"],
            "width": video["width"],
            "length": length,
            "video_id": video["id"],
        }
        if annotated:
            dicts[video["id"]]["annotations"] = [[] for _ in range(length)]
    return dicts


def _add_track(video: Dict, ann: Dict, id_map: Dict[int, int], extra_keys: List[str], json_file: str) -> None:
    """Adds one annotation (one object's track) to the per-frame object lists of its video."""
    where = f"{json_file}: annotation {ann['id']} of video {video['video_id']}"
    segms = ann["segmentations"]
    if len(segms) != video["length"]:
        raise ValueError(f"{where} has {len(segms)} segmentations for {video['length']} frames")
    if ann["category_id"] not in id_map:
        raise ValueError(f"{where} has unknown category_id {ann['category_id']}")
    hw = (video["height"], video["width"])
    for t, raw in enumerate(segms):
        segm = _frame_segmentation(raw, hw, f"{where}, frame {t}")
        if segm is None:
            continue
        obj = {
            "id": ann["id"],
            "category_id": id_map[ann["category_id"]],
            "bbox": _frame_bbox(segm, ann.get("bboxes"), t, hw),
            "bbox_mode": BoxMode.XYWH_ABS,
            "segmentation": segm,
            "iscrowd": ann.get("iscrowd", 0),
        }
        obj.update({k: ann[k] for k in extra_keys if k in ann})
        video["annotations"][t].append(obj)


def load_ytvis_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    extra_annotation_keys: Optional[List[str]] = None,
) -> List[Dict]:
    """
    Args:
        json_file: a YouTube-VIS annotation file.
        image_root: the folder the videos' ``file_names`` are relative to.
        dataset_name: when given, its metadata gets ``thing_classes`` and
            ``thing_dataset_id_to_contiguous_id`` from the file's categories.
        extra_annotation_keys: annotation keys copied into every frame's object dicts.

    Returns:
        list[dict]: one dict per video, {"file_names", "height", "width", "length",
        "video_id", "annotations"}: "annotations" (annotated splits only) holds one list per
        frame of {"id", "category_id" (contiguous), "bbox" (XYWH_ABS), "bbox_mode",
        "segmentation", "iscrowd"}; an object absent from a frame is not in that frame's list.
    """
    with PathManager.open(json_file, "r") as f:
        data = json.load(f)
    _require(data, ("videos", "categories"), "the file", json_file)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        meta.thing_classes = [c["name"] for c in categories]
        meta.thing_dataset_id_to_contiguous_id = id_map

    annotated = "annotations" in data
    videos = _video_dicts(json_file, image_root, data["videos"], annotated)
    extra_keys = list(extra_annotation_keys or [])
    known_ids = {v["id"] for v in data["videos"]}
    seen = set()
    for ann in data.get("annotations", []):
        _require(ann, _ANNOTATION_KEYS, f"annotation {ann.get('id', '?')}", json_file)
        if ann["video_id"] not in known_ids:
            raise ValueError(f"{json_file}: annotation {ann['id']} names unknown video {ann['video_id']}")
        if ann["id"] in seen:
            raise ValueError(f"{json_file}: annotation id {ann['id']} is used twice")
        seen.add(ann["id"])
        if ann["video_id"] in videos:  # else an empty video, skipped
            _add_track(videos[ann["video_id"]], ann, id_map, extra_keys, json_file)
    logger.info(f"Loaded {len(videos)} videos in YouTube-VIS format from {json_file}")
    return list(videos.values())


def register_ytvis_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """
    Registers a YouTube-VIS-format dataset under `name` (replacing an earlier registration).

    Args:
        metadata: extra metadata (e.g. thing_classes, thing_colors); json_file, image_root and
            evaluator_type "ytvis" are added.
    """
    register_dataset(
        name,
        lambda: load_ytvis_json(json_file, image_root, name),
        json_file=json_file,
        image_root=image_root,
        evaluator_type="ytvis",
        **metadata,
    )
