"""
One synthetic video: the image dataset's shapes (one class per shape) moving in straight lines
over a static, darkened stuff background. Objects are drawn in a fixed depth order, so later
ones occlude earlier ones; they may enter or leave the frame. An object whose visible part in
a frame is smaller than ``MIN_VISIBLE_PIXELS`` is absent there (``null`` in the JSON).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from mask2former.data.synthetic.render import OBJECT_TEXTURES, SHAPES, STUFF_TEXTURES, hsv_color
from mask2former.data.synthetic.scene import _stuff_layout

__all__ = ["Track", "SyntheticVideo", "render_video", "MIN_VISIBLE_PIXELS"]

MIN_VISIBLE_PIXELS = 20
_BACKGROUND_GAIN = 0.5  # darkens the background so the bright objects stand out
_MAX_SPEED = 7.0  # pixels per frame
_CROSSING_FRACTION = 0.35  # of the objects, that enter or leave the frame during the video


@dataclass
class Track:
    category: int  # contiguous id
    masks: List[Optional[np.ndarray]]  # per frame: (H, W) bool visible mask, None when absent


@dataclass
class SyntheticVideo:
    frames: List[np.ndarray]  # T (H, W, 3) uint8 RGB
    tracks: List[Track]  # objects visible in at least one frame


def _background(rng, categories: Sequence[Dict], h: int, w: int) -> np.ndarray:
    tops = [i for i, c in enumerate(categories) if not c["isthing"] and c["region"] == "top"]
    grounds = [i for i, c in enumerate(categories) if not c["isthing"] and c["region"] == "ground"]
    layout = _stuff_layout(rng, h, w, tops, grounds)
    image = np.zeros((h, w, 3), np.float32)
    for cat in np.unique(layout):
        base = np.asarray(categories[cat]["base_rgb"], np.float32)
        texture = STUFF_TEXTURES[categories[cat]["texture"]](rng, h, w, base)
        image[layout == cat] = texture[layout == cat]
    return image * _BACKGROUND_GAIN


def _trajectory(rng, radius: float, num_frames: int, h: int, w: int):
    """(center at `anchor_frame`, anchor_frame, velocity per frame) of a straight-line motion."""
    anchor = rng.uniform(0.15, 0.85, 2) * (w, h)
    if num_frames > 1 and rng.uniform() < _CROSSING_FRACTION:
        # enters from (or leaves through) a random side: fully outside at the first (last) frame
        first, last = (num_frames - 1, 0) if rng.uniform() < 0.5 else (0, num_frames - 1)
        outside = rng.uniform(0.2, 0.8, 2) * (w, h)
        side = rng.integers(4)
        outside[side % 2] = -1.2 * radius if side < 2 else (w, h)[side % 2] + 1.2 * radius
        return anchor, first, (outside - anchor) / (last - first)
    angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, _MAX_SPEED)
    return anchor, rng.integers(num_frames), speed * np.array([np.cos(angle), np.sin(angle)])


def _object_masks(rng, category: Dict, num_frames: int, h: int, w: int) -> List[np.ndarray]:
    """(H, W) bool masks of one object moving at constant velocity, the same shape in every frame."""
    shape_seed = int(rng.integers(2**31))
    radius = rng.uniform(0.14, 0.24) * min(h, w)
    anchor, anchor_frame, velocity = _trajectory(rng, radius, num_frames, h, w)
    masks = []
    for t in range(num_frames):
        cx, cy = anchor + (t - anchor_frame) * velocity
        shape_rng = np.random.default_rng(shape_seed)  # same orientation and proportions each frame
        masks.append(SHAPES[category["shape"]](h, w, cx, cy, radius, shape_rng))
    return masks


def render_video(
    rng: np.random.Generator, categories: Sequence[Dict], num_frames: int, height: int, width: int
) -> SyntheticVideo:
    """
    Args:
        rng: the video's own random generator.
        categories: the image dataset's categories (things first; index = contiguous id).
        num_frames, height, width: video size.
    """
    h, w = height, width
    things = [i for i, c in enumerate(categories) if c["isthing"]]
    background = _background(rng, categories, h, w)
    frames = [background.copy() for _ in range(num_frames)]
    owner = np.full((num_frames, h, w), -1, np.int32)
    classes = []
    for k in range(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25])):
        cat = things[rng.integers(len(things))]
        color = hsv_color(categories[cat]["hue"] + rng.uniform(-15, 15), rng.uniform(0.75, 1.0), 1.0)
        texture = OBJECT_TEXTURES["solid"](rng, h, w, color, color)
        for t, mask in enumerate(_object_masks(rng, categories[cat], num_frames, h, w)):
            frames[t][mask] = texture[mask]
            owner[t][mask] = k
        classes.append(cat)
    tracks = []
    for k, cat in enumerate(classes):
        visible = [owner[t] == k for t in range(num_frames)]
        masks = [m if np.count_nonzero(m) >= MIN_VISIBLE_PIXELS else None for m in visible]
        if any(m is not None for m in masks):
            tracks.append(Track(cat, masks))
    frames = [np.clip(np.round(f), 0, 255).astype(np.uint8) for f in frames]
    return SyntheticVideo(frames, tracks)
