"""
Writes the synthetic video dataset in YouTube-VIS format, under ``<root>/synthetic_video/``:

    {train,valid}/JPEGImages/<video>/<frame>.jpg   RGB frames
    {train,valid}.json                             YouTube-VIS JSON (RLE segmentations, null
                                                   where an object is absent); both splits are
                                                   annotated, so the validation split can be scored
    .generated.json                                marker, written last: generator version + arguments

Each video is a pure function of (seed, split, index): the same arguments give the same files.
"""
import contextlib
import logging
import os
import shutil
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from mask2former.data.synthetic.generator import _exclusive_lock, _read_marker, _write_json
from mask2former.data.synthetic.metadata import CATEGORIES_FILE, categories_digest, load_synthetic_categories

from .render import render_video

__all__ = [
    "VIDEO_GENERATOR_VERSION",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_NUM_FRAMES",
    "DEFAULT_SEED",
    "FRAME_SIZE",
    "SPLIT_DIRS",
    "synthetic_video_dir",
    "split_paths",
    "generate_synthetic_video_dataset",
    "ensure_synthetic_video_dataset",
]

logger = logging.getLogger(__name__)

VIDEO_GENERATOR_VERSION = 1  # bump when the generated content changes
DEFAULT_NUM_TRAIN = 300
DEFAULT_NUM_VAL = 40
DEFAULT_NUM_FRAMES = 8
DEFAULT_SEED = 0
FRAME_SIZE = (128, 128)  # (height, width)
SPLIT_DIRS = {"train": "train", "val": "valid"}  # registered split -> folder (YouTube-VIS's names)
MARKER = ".generated.json"
_SPLIT_CODE = {"train": 0, "val": 1}


def synthetic_video_dir(root: str) -> str:
    return os.path.join(root, "synthetic_video")


def split_paths(root: str, split: str) -> Tuple[str, str]:
    """(image_root, json_file) of a split ("train" or "val")."""
    d = os.path.join(synthetic_video_dir(root), SPLIT_DIRS[split])
    return os.path.join(d, "JPEGImages"), d + ".json"


def _encode(mask: Optional[np.ndarray]) -> Tuple[Optional[Dict], Optional[List[float]], Optional[int]]:
    if mask is None:
        return None, None, None
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, [float(v) for v in mask_util.toBbox(rle)], int(mask_util.area(rle))


def _generate_split(root: str, split: str, num_videos: int, num_frames: int, seed: int) -> None:
    categories = load_synthetic_categories()
    image_root, json_file = split_paths(root, split)
    h, w = FRAME_SIZE
    videos, annotations = [], []
    for index in range(num_videos):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE[split], index]))
        video = render_video(rng, categories, num_frames, h, w)
        name = f"video_{index + 1:05d}"
        os.makedirs(os.path.join(image_root, name), exist_ok=True)
        file_names = [f"{name}/{t:05d}.jpg" for t in range(num_frames)]
        for file_name, frame in zip(file_names, video.frames):
            Image.fromarray(frame).save(os.path.join(image_root, file_name), quality=95)
        videos.append({"id": index + 1, "file_names": file_names, "height": h, "width": w, "length": num_frames})
        for track in video.tracks:
            segms, boxes, areas = zip(*(_encode(m) for m in track.masks))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": index + 1,
                    "category_id": categories[track.category]["id"],
                    "iscrowd": 0,
                    "height": h,
                    "width": w,
                    "segmentations": list(segms),
                    "bboxes": list(boxes),
                    "areas": list(areas),
                }
            )
    cats = [{"id": c["id"], "name": c["name"], "supercategory": "shape"} for c in categories if c["isthing"]]
    info = {"description": f"mask2former synthetic videos, generator v{VIDEO_GENERATOR_VERSION}"}
    _write_json(json_file, {"info": info, "videos": videos, "annotations": annotations, "categories": cats})


def _marker_args(num_train: int, num_val: int, num_frames: int, seed: int) -> Dict:
    return {
        "generator_version": VIDEO_GENERATOR_VERSION,
        "categories_md5": categories_digest(CATEGORIES_FILE),
        "num_train": num_train,
        "num_val": num_val,
        "num_frames": num_frames,
        "seed": seed,
        "frame_size": list(FRAME_SIZE),
    }


def generate_synthetic_video_dataset(
    root: str,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    num_frames: int = DEFAULT_NUM_FRAMES,
    seed: int = DEFAULT_SEED,
) -> str:
    """
    (Re)writes the whole dataset into ``<root>/synthetic_video``, unguarded: concurrent callers
    should go through :func:`ensure_synthetic_video_dataset`. The marker is written last.

    Returns:
        str: the dataset directory.
    """
    if min(num_train, num_val, num_frames) < 1:
        raise ValueError(
            f"num_train ({num_train}), num_val ({num_val}) and num_frames ({num_frames}) must be >= 1"
        )
    start = time.perf_counter()
    dataset_dir = synthetic_video_dir(root)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(dataset_dir, MARKER))
    for split, n in (("train", num_train), ("val", num_val)):
        image_root, json_file = split_paths(root, split)
        shutil.rmtree(os.path.dirname(image_root), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(json_file)
        _generate_split(root, split, n, num_frames, seed)
    _write_json(os.path.join(dataset_dir, MARKER), _marker_args(num_train, num_val, num_frames, seed))
    logger.info(
        "Generated the synthetic video dataset (%d train, %d val videos of %d frames) in %s in %.1fs",
        num_train, num_val, num_frames, dataset_dir, time.perf_counter() - start,
    )
    return dataset_dir


def _is_current(dataset_dir: str, wanted: Dict) -> bool:
    marker = _read_marker(dataset_dir)
    if marker is None:
        return False
    current = _marker_args(0, 0, 0, 0)
    fixed = ("generator_version", "categories_md5", "frame_size")
    return all(marker.get(k) == current[k] for k in fixed) and all(
        marker.get(k) == v for k, v in wanted.items() if v is not None
    )


def ensure_synthetic_video_dataset(
    root: str,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    num_frames: Optional[int] = None,
    seed: Optional[int] = None,
    force: bool = False,
) -> str:
    """
    Makes sure ``<root>/synthetic_video`` holds complete data of this generator version that
    matches the arguments given (None accepts what is there, and means the default when
    generating). Safe across processes: one generates under a file lock, the others wait.

    Returns:
        str: the dataset directory.
    """
    dataset_dir = synthetic_video_dir(root)
    wanted = {"num_train": num_train, "num_val": num_val, "num_frames": num_frames, "seed": seed}
    if not force and _is_current(dataset_dir, wanted):
        return dataset_dir
    os.makedirs(dataset_dir, exist_ok=True)
    with _exclusive_lock(os.path.join(dataset_dir, ".lock")):
        if force or not _is_current(dataset_dir, wanted):
            defaults = {
                "num_train": DEFAULT_NUM_TRAIN,
                "num_val": DEFAULT_NUM_VAL,
                "num_frames": DEFAULT_NUM_FRAMES,
                "seed": DEFAULT_SEED,
            }
            args = {k: defaults[k] if v is None else v for k, v in wanted.items()}
            logger.info("Generating the synthetic video dataset in %s ...", dataset_dir)
            generate_synthetic_video_dataset(root, **args)
    return dataset_dir
