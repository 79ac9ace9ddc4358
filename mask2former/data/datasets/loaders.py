"""
Dataset-dict loaders shared by the built-in registrations.

They are what ``DatasetCatalog.get(name)`` runs, lazily. Each first checks that the files it
needs exist and, if not, raises a FileNotFoundError that names the expected path and the way
to produce it, since a missing or unprepared dataset is the most common failure.
"""
import json
import logging
import os
from typing import Any, Dict, List, Optional

from detectron2.data.datasets.coco import load_coco_json, load_sem_seg
from detectron2.utils.file_io import PathManager

__all__ = [
    "DatasetSource",
    "require_path",
    "load_sem_seg_dicts",
    "load_panoptic_dicts",
    "load_instance_dicts",
]

logger = logging.getLogger(__name__)

README = "datasets/README.md"


class DatasetSource:
    """
    What a user must do to obtain one dataset, for error messages.

    Args:
        title: human-readable dataset name, e.g. "ADE20K semantic".
        script: the preparation module under datasets/, run as ``python -m datasets.<script>``
            (None if the download is used as is).
    """

    def __init__(self, title: str, script: Optional[str] = None):
        self.title = title
        self.script = script

    def hint(self) -> str:
        if self.script:
            return f"see {README} and run python -m datasets.{self.script}"
        return f"see {README} (the download is used as is, no preparation script)"


def require_path(path: str, source: DatasetSource, kind: str = "dir") -> None:
    """
    Raise FileNotFoundError unless ``path`` is an existing directory (kind="dir") or file
    (kind="file"); the message names the path, the dataset and how to prepare it.
    """
    exists = PathManager.isdir(path) if kind == "dir" else PathManager.isfile(path)
    if not exists:
        raise FileNotFoundError(f"{source.title} not found: expected {path}; {source.hint()}")


def load_sem_seg_dicts(
    gt_root: str, image_root: str, source: DatasetSource, gt_ext: str = "png", image_ext: str = "jpg"
) -> List[Dict[str, Any]]:
    """
    Semantic segmentation dicts ("file_name", "sem_seg_file_name"), images and label maps
    matched by file name.
    """
    require_path(image_root, source)
    require_path(gt_root, source)
    if not any(f.endswith(gt_ext) for f in PathManager.ls(gt_root)):
        raise FileNotFoundError(
            f"{source.title} not found: no '*.{gt_ext}' label files in {gt_root}; {source.hint()}"
        )
    return load_sem_seg(gt_root, image_root, gt_ext=gt_ext, image_ext=image_ext)


def _as_image_id(value: Any) -> Any:
    # COCO uses integer ids; other datasets may use file stems. Keep what is not an integer.
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _convert_segment(seg: Dict[str, Any], meta: Dict[str, Any], json_file: str) -> Dict[str, Any]:
    seg = dict(seg)
    cat = seg["category_id"]
    if cat in meta["thing_dataset_id_to_contiguous_id"]:
        seg["category_id"] = meta["thing_dataset_id_to_contiguous_id"][cat]
        seg["isthing"] = True
    elif cat in meta["stuff_dataset_id_to_contiguous_id"]:
        seg["category_id"] = meta["stuff_dataset_id_to_contiguous_id"][cat]
        seg["isthing"] = False
    else:
        raise ValueError(
            f"{json_file}: segment {seg.get('id')} has category_id {cat}, which is not a class of "
            f"this dataset's metadata ({len(meta['stuff_dataset_id_to_contiguous_id'])} classes)"
        )
    return seg


def _warn_on_isthing_mismatch(json_info: Dict[str, Any], meta: Dict[str, Any], json_file: str) -> None:
    for cat in json_info.get("categories", []):
        if "isthing" not in cat or cat.get("id") not in meta["stuff_dataset_id_to_contiguous_id"]:
            continue
        ours = cat["id"] in meta["thing_dataset_id_to_contiguous_id"]
        if bool(cat["isthing"]) != ours:
            logger.warning(
                f"{json_file}: category {cat['id']} ('{cat.get('name')}') has isthing={cat['isthing']} "
                f"but the registered metadata treats it as a {'thing' if ours else 'stuff'} class"
            )


def load_panoptic_dicts(
    json_file: str,
    image_dir: str,
    gt_dir: str,
    meta: Dict[str, Any],
    source: DatasetSource,
    semseg_dir: Optional[str] = None,
    image_ext: str = ".jpg",
) -> List[Dict[str, Any]]:
    """
    Load a panoptic dataset in COCO panoptic format.

    Args:
        json_file: panoptic json ("annotations" with "file_name" and "segments_info").
        image_dir: folder of the input images.
        gt_dir: folder of the panoptic PNGs (segment id = R + 256 * G + 256 ** 2 * B).
        meta: metadata with "thing_dataset_id_to_contiguous_id" and
            "stuff_dataset_id_to_contiguous_id".
        semseg_dir: folder of semantic label PNGs with the same file names, or None.
        image_ext: extension of images whose name the json's "images" list does not give.

    Returns:
        dicts with "file_name", "image_id", "pan_seg_file_name", "segments_info" (category ids
        made contiguous, "isthing" added), "sem_seg_file_name" when semseg_dir is given, and
        "height"/"width" when the json lists them.
    """
    require_path(image_dir, source)
    require_path(gt_dir, source)
    require_path(json_file, source, kind="file")
    if semseg_dir is not None:
        require_path(semseg_dir, source)

    with PathManager.open(json_file) as f:
        json_info = json.load(f)
    if "annotations" not in json_info:
        raise ValueError(f"{json_file}: missing key 'annotations'; is it a COCO panoptic json?")
    _warn_on_isthing_mismatch(json_info, meta, json_file)
    images = {img["id"]: img for img in json_info.get("images", [])}

    ret = []
    for ann in json_info["annotations"]:
        image_info = images.get(ann["image_id"], {})
        stem = os.path.splitext(ann["file_name"])[0]
        record = {
            "file_name": os.path.join(image_dir, image_info.get("file_name", stem + image_ext)),
            "image_id": _as_image_id(ann["image_id"]),
            "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
            "segments_info": [_convert_segment(s, meta, json_file) for s in ann["segments_info"]],
        }
        if semseg_dir is not None:
            record["sem_seg_file_name"] = os.path.join(semseg_dir, ann["file_name"])
        if "height" in image_info and "width" in image_info:
            record["height"], record["width"] = image_info["height"], image_info["width"]
        ret.append(record)
    if not ret:
        raise FileNotFoundError(f"{source.title}: {json_file} lists no annotations; {source.hint()}")
    # Checking the first record catches a wrong root or extension early, before training starts.
    for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
        if key in ret[0] and not PathManager.isfile(ret[0][key]):
            raise FileNotFoundError(
                f"{source.title}: {json_file} refers to {ret[0][key]}, which does not exist; {source.hint()}"
            )
    logger.info(f"Loaded {len(ret)} panoptic annotations from {json_file}")
    return ret


def load_instance_dicts(
    json_file: str, image_root: str, meta: Dict[str, Any], source: DatasetSource
) -> List[Dict[str, Any]]:
    """
    Load a COCO-format instance json and map its category ids through
    ``meta["thing_dataset_id_to_contiguous_id"]`` (which must cover every id in the json).
    """
    require_path(image_root, source)
    require_path(json_file, source, kind="file")
    dicts = load_coco_json(json_file, image_root, dataset_name=None)
    id_map = meta["thing_dataset_id_to_contiguous_id"]
    for d in dicts:
        for obj in d.get("annotations", []):
            if obj["category_id"] not in id_map:
                raise ValueError(
                    f"{json_file}: an annotation of image {d['image_id']} has category_id "
                    f"{obj['category_id']}, which is not one of the {len(id_map)} thing classes"
                )
            obj["category_id"] = id_map[obj["category_id"]]
    return dicts
