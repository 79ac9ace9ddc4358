"""
Writes the synthetic dataset in the real formats, under ``<root>/synthetic/``:

    images/{train,val}/000001.jpg            RGB images
    annotations/instances_{train,val}.json   COCO instances (things only, RLE masks)
    annotations/panoptic_{train,val}.json    COCO panoptic (segments_info, isthing categories)
    panoptic_{train,val}/000001.png          COCO panoptic PNGs: id = R + 256 * G + 256^2 * B
    semantic_{train,val}/000001.png          contiguous ids 0..K-1 (things first), 255 unlabeled
    .generated.json                          marker, written last: generator version + arguments

Each image is a pure function of (seed, split, index), so splits do not depend on each
other's sizes and the same arguments give byte-identical files.
"""

import contextlib
import json
import logging
import os
import shutil
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from .metadata import CATEGORIES_FILE, categories_digest, load_synthetic_categories
from .scene import VOID, render_scene

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: concurrent generation is not guarded
    fcntl = None

__all__ = [
    "GENERATOR_VERSION",
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_SEED",
    "IMAGE_SIZE",
    "SPLITS",
    "synthetic_dir",
    "generate_synthetic_dataset",
    "ensure_synthetic_dataset",
]

logger = logging.getLogger(__name__)

# Bump when the generated content changes: data on disk from another version is regenerated.
GENERATOR_VERSION = 2
DEFAULT_NUM_TRAIN = 400
DEFAULT_NUM_VAL = 50
DEFAULT_SEED = 0
IMAGE_SIZE = (128, 128)  # (height, width)
SPLITS = ("train", "val")
MARKER = ".generated.json"
_SPLIT_CODE = {"train": 0, "val": 1}
_CONTENT = ["images", "annotations"] + [
    f"{k}_{s}" for k in ("panoptic", "semantic") for s in SPLITS
]


def synthetic_dir(root: str) -> str:
    return os.path.join(root, "synthetic")


def _bbox_xywh(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def _segment_ids(rng: np.random.Generator, n: int) -> List[int]:
    # arbitrary distinct ids spread over all three channels, as in real panoptic PNGs
    ids: List[int] = []
    while len(ids) < n:
        i = int(rng.integers(1, 256**3))
        if i not in ids:
            ids.append(i)
    return ids


def _write_sample(dataset_dir, split, image_id, rng, categories, size) -> Tuple[Dict, Dict, List]:
    """Renders one scene, writes its three image files; returns its json records."""
    scene = render_scene(rng, categories, *size)
    name = f"{image_id:06d}"
    seg_ids = _segment_ids(rng, len(scene.segment_categories))
    pan = np.zeros(size, np.uint32)
    semantic = np.full(size, 255, np.uint8)
    segments_info, instances = [], []
    for k, (seg_id, cat) in enumerate(zip(seg_ids, scene.segment_categories)):
        mask = scene.segment_map == k
        pan[mask] = seg_id
        semantic[mask] = cat
        info = {
            "id": seg_id,
            "category_id": categories[cat]["id"],
            "iscrowd": 0,
            "area": int(mask.sum()),
            "bbox": _bbox_xywh(mask),
        }
        segments_info.append(info)
        if categories[cat]["isthing"]:
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            instances.append(
                {
                    "image_id": image_id,
                    "category_id": info["category_id"],
                    "segmentation": rle,
                    "area": info["area"],
                    "bbox": info["bbox"],
                    "iscrowd": 0,
                }
            )
    assert not np.any((scene.segment_map == VOID) & (pan != 0))

    Image.fromarray(scene.image).save(
        os.path.join(dataset_dir, "images", split, name + ".jpg"), quality=95, subsampling=0
    )
    rgb = np.stack([pan % 256, pan // 256 % 256, pan // 256**2], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(os.path.join(dataset_dir, f"panoptic_{split}", name + ".png"))
    Image.fromarray(semantic).save(os.path.join(dataset_dir, f"semantic_{split}", name + ".png"))

    image = {"id": image_id, "file_name": name + ".jpg", "height": size[0], "width": size[1]}
    pan_ann = {"image_id": image_id, "file_name": name + ".png", "segments_info": segments_info}
    return image, pan_ann, instances


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _generate_split(dataset_dir, split, num_images, seed, categories, size) -> None:
    for sub in (f"images/{split}", f"panoptic_{split}", f"semantic_{split}", "annotations"):
        os.makedirs(os.path.join(dataset_dir, sub), exist_ok=True)
    images, pan_anns, instances = [], [], []
    for index in range(num_images):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE[split], index]))
        image, pan_ann, inst = _write_sample(dataset_dir, split, index + 1, rng, categories, size)
        images.append(image)
        pan_anns.append(pan_ann)
        instances.extend(inst)
    for ann_id, ann in enumerate(instances, start=1):
        ann["id"] = ann_id

    info = {"description": f"mask2former synthetic shapes, generator v{GENERATOR_VERSION}"}
    pan_cats = [
        {
            "id": c["id"],
            "name": c["name"],
            "isthing": c["isthing"],
            "color": c["color"],
            "supercategory": "thing" if c["isthing"] else "stuff",
        }
        for c in categories
    ]
    _write_json(
        os.path.join(dataset_dir, "annotations", f"panoptic_{split}.json"),
        {"info": info, "images": images, "annotations": pan_anns, "categories": pan_cats},
    )
    inst_cats = [
        {"id": c["id"], "name": c["name"], "supercategory": "thing"}
        for c in categories
        if c["isthing"]
    ]
    _write_json(
        os.path.join(dataset_dir, "annotations", f"instances_{split}.json"),
        {"info": info, "images": images, "annotations": instances, "categories": inst_cats},
    )


def _marker_args(num_train: int, num_val: int, seed: int, size: Sequence[int]) -> Dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "categories_md5": categories_digest(CATEGORIES_FILE),
        "num_train": num_train,
        "num_val": num_val,
        "seed": seed,
        "image_size": list(size),
    }


def _read_marker(dataset_dir: str) -> Optional[Dict]:
    try:
        with open(os.path.join(dataset_dir, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_current(dataset_dir: str, **wanted) -> bool:
    """Whether complete data of this generator version exists, matching the non-None `wanted`."""
    marker = _read_marker(dataset_dir)
    if marker is None:
        return False
    current = _marker_args(0, 0, 0, IMAGE_SIZE)
    for key in ("generator_version", "categories_md5"):
        if marker.get(key) != current[key]:
            return False
    return all(marker.get(k) == v for k, v in wanted.items() if v is not None)


def generate_synthetic_dataset(
    dataset_dir: str,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
) -> None:
    """
    (Re)writes the whole dataset into `dataset_dir`, unguarded: concurrent callers should go
    through :func:`ensure_synthetic_dataset`. The marker is written last, atomically, so an
    interrupted run leaves data that is regenerated on next use.
    """
    start = time.perf_counter()
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(dataset_dir, MARKER))
    for sub in _CONTENT:
        shutil.rmtree(os.path.join(dataset_dir, sub), ignore_errors=True)
    categories = load_synthetic_categories()
    for split, n in (("train", num_train), ("val", num_val)):
        _generate_split(dataset_dir, split, n, seed, categories, IMAGE_SIZE)
    _write_json(
        os.path.join(dataset_dir, MARKER), _marker_args(num_train, num_val, seed, IMAGE_SIZE)
    )
    logger.info(
        "Generated the synthetic dataset (%d train, %d val images) in %s in %.1fs",
        num_train,
        num_val,
        dataset_dir,
        time.perf_counter() - start,
    )


@contextlib.contextmanager
def _exclusive_lock(path: str):
    with open(path, "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def ensure_synthetic_dataset(
    root: str,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    seed: Optional[int] = None,
    force: bool = False,
) -> str:
    """
    Makes sure ``<root>/synthetic`` holds complete data of the current generator version;
    generates it otherwise. Arguments left None accept whatever was generated before (and
    take, when generating, the values of the stale data being replaced or else the defaults). Safe across processes: one generates under a file
    lock while the others wait, then find its marker.

    Returns:
        str: the dataset directory, ``<root>/synthetic``.
    """
    dataset_dir = synthetic_dir(root)
    wanted = {"num_train": num_train, "num_val": num_val, "seed": seed}
    if not force and _is_current(dataset_dir, **wanted):
        return dataset_dir
    os.makedirs(dataset_dir, exist_ok=True)
    with _exclusive_lock(os.path.join(dataset_dir, ".lock")):
        if force or not _is_current(dataset_dir, **wanted):
            # stale data of an older version is remade with the counts and seed it had
            previous = _read_marker(dataset_dir) or {}
            defaults = {
                "num_train": DEFAULT_NUM_TRAIN,
                "num_val": DEFAULT_NUM_VAL,
                "seed": DEFAULT_SEED,
            }
            args = {
                k: v if v is not None else previous.get(k, defaults[k]) for k, v in wanted.items()
            }
            logger.info("Generating the synthetic dataset in %s ...", dataset_dir)
            generate_synthetic_dataset(dataset_dir, **args)
    return dataset_dir
