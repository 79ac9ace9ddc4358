"""A hand-written tiny YouTube-VIS dataset: PNG frames whose pixels say which frame and column they are."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

H, W = 16, 20
CATEGORIES = [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]  # contiguous: 3 -> 0, 7 -> 1


def frame_pixels(t: int, h: int = H, w: int = W) -> np.ndarray:
    """(H, W, 3) uint8: red = 10 * column, green = 16 * row, blue = 40 * frame index."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([10 * xs, 16 * ys, np.full_like(xs, 40 * t)], axis=-1).astype(np.uint8)


def box_mask(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _compressed(m):
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _uncompressed(m):
    flat = m.flatten(order="F")  # COCO RLE: column-major runs, starting with a run of zeros
    boundaries = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], boundaries, [flat.size]])).tolist()
    return {"size": [H, W], "counts": ([0] if flat[0] else []) + [int(r) for r in runs]}


def _polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


# the source masks of the annotated video (id 1, 4 frames): object 11 ("b") and object 12 ("a")
MASKS = {
    11: [box_mask(2, 2, 8, 6), box_mask(3, 2, 9, 6), box_mask(4, 2, 10, 6), None],
    12: [None, box_mask(10, 8, 16, 14), box_mask(11, 8, 17, 14), box_mask(12, 8, 18, 14)],
}


def tiny_ytvis_json(image_root: str) -> dict:
    """Video 1: 4 annotated frames; video 2: 2 frames without objects; video 3: no frames."""
    videos = []
    for vid, length in ((1, 4), (2, 2), (3, 0)):
        names = [f"v{vid}/{t:02d}.png" for t in range(length)]
        for t, name in enumerate(names):
            os.makedirs(os.path.join(image_root, f"v{vid}"), exist_ok=True)
            Image.fromarray(frame_pixels(t)).save(os.path.join(image_root, name))
        videos.append({"id": vid, "file_names": names, "height": H, "width": W, "length": length})
    annotations = [
        {
            "id": 11, "video_id": 1, "category_id": 7, "iscrowd": 0, "note": "x",
            "segmentations": [_compressed(MASKS[11][0]), _uncompressed(MASKS[11][1]), _polygon(4, 2, 10, 6), None],
            "bboxes": [[2, 2, 6, 4], None, [4, 2, 6, 4], None],
            "areas": [24, 24, 24, None],
        },
        {
            "id": 12, "video_id": 1, "category_id": 3, "iscrowd": 0,
            "segmentations": [None] + [_compressed(m) for m in MASKS[12][1:]],
            "bboxes": [None, [10, 8, 6, 6], [11, 8, 6, 6], [12, 8, 6, 6]],
            "areas": [None, 36, 36, 36],
        },
    ]
    return {"videos": videos, "annotations": annotations, "categories": CATEGORIES}


@pytest.fixture
def tiny_ytvis(tmp_path):
    """(json_file, image_root) of the tiny dataset."""
    image_root = str(tmp_path / "JPEGImages")
    json_file = str(tmp_path / "train.json")
    with open(json_file, "w") as f:
        json.dump(tiny_ytvis_json(image_root), f)
    return json_file, image_root


def write_json(path, data) -> str:
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)
