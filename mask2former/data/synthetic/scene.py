"""
One synthetic scene: a stuff background (a "top" region above a wavy horizon, "ground"
regions below, split by a wavy line) with optional unlabeled clutter, and 1-4 textured
objects whose class is their shape. Objects may overlap; placement keeps 60% or more of
every object visible, so that each one stays recognisable and has a sizeable mask.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from .render import OBJECT_TEXTURES, SHAPES, STUFF_TEXTURES, hsv_color, smooth_noise

__all__ = ["Scene", "render_scene"]

VOID = -1
_MIN_VISIBLE_FRACTION = 0.6  # of an object's own area, after later objects occlude it
_MIN_AREA_FRACTION = 0.012  # of the image: smallest visible object (about 200 px at 128x128)
_MIN_STUFF_FRACTION = 0.06  # smaller ground parts are merged away
_MIN_CONTRAST = 70.0  # RGB distance between an object's color and the background under it


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    segment_map: np.ndarray  # (H, W) int32: index into `segment_categories`, VOID unlabeled
    segment_categories: List[int]  # contiguous category id of each segment


def _wave(rng, n: int, amplitude: float) -> np.ndarray:
    t = np.arange(n, dtype=np.float32)
    return amplitude * np.sin(2 * np.pi * t / rng.uniform(30, 80) + rng.uniform(0, 2 * np.pi))


def _stuff_layout(rng, h: int, w: int, tops: Sequence[int], grounds: Sequence[int]) -> np.ndarray:
    """(H, W) int32 map of contiguous stuff category ids covering the whole image."""
    ys, xs = np.mgrid[0:h, 0:w]
    ground = grounds[rng.integers(len(grounds))]
    layout = np.full((h, w), ground, np.int32)
    if len(grounds) > 1 and rng.uniform() < 0.5:
        other = [g for g in grounds if g != ground][rng.integers(len(grounds) - 1)]
        angle = rng.uniform(0, np.pi)
        px, py = rng.uniform(0.3, 0.7) * w, rng.uniform(0.5, 0.8) * h
        side = (xs - px) * np.cos(angle) + (ys - py) * np.sin(angle) + _wave(rng, w, 3)[None]
        part = side > 0
        if min(part.mean(), 1 - part.mean()) >= _MIN_STUFF_FRACTION:
            layout[part] = other
    if tops and rng.uniform() < 0.85:
        horizon = rng.uniform(0.25, 0.6) * h + _wave(rng, w, rng.uniform(1, 5))
        layout[ys < horizon[None]] = tops[rng.integers(len(tops))]
    return layout


def _clutter_mask(rng, h: int, w: int) -> np.ndarray:
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    mask = np.zeros((h, w), bool)
    for _ in range(3):
        x, y = cx + rng.uniform(-8, 8), cy + rng.uniform(-8, 8)
        mask |= SHAPES["ellipse"](h, w, x, y, rng.uniform(4, 8), rng)
    return mask


def _object_colors(rng, hue_center: float):
    # a class has a hue family (+-30 deg around centers 72 deg apart), but 10% of objects take
    # any hue, and textures mix in a darker second color: color hints at the class, shape decides
    hue = rng.uniform(0, 360) if rng.uniform() < 0.1 else hue_center + rng.uniform(-30, 30)
    c1 = hsv_color(hue, rng.uniform(0.45, 1.0), rng.uniform(0.55, 1.0))
    return c1, c1 * rng.uniform(0.45, 0.7)


def render_scene(
    rng: np.random.Generator, categories: Sequence[Dict], height: int, width: int
) -> Scene:
    """
    Args:
        rng: the scene's own random generator.
        categories: categories.json entries, things first; index = contiguous id.
        height, width: image size.
    """
    h, w = height, width
    things = [i for i, c in enumerate(categories) if c["isthing"]]
    tops = [i for i, c in enumerate(categories) if not c["isthing"] and c["region"] == "top"]
    grounds = [i for i, c in enumerate(categories) if not c["isthing"] and c["region"] == "ground"]

    layout = _stuff_layout(rng, h, w, tops, grounds)
    image = np.zeros((h, w, 3), np.float32)
    seg_categories = [int(c) for c in np.unique(layout)]
    segment_map = np.searchsorted(seg_categories, layout).astype(np.int32)
    for cat in seg_categories:
        base = np.asarray(categories[cat]["base_rgb"], np.float32) + rng.uniform(-20, 20, 3)
        texture = STUFF_TEXTURES[categories[cat]["texture"]](rng, h, w, base)
        image[layout == cat] = texture[layout == cat]

    if rng.uniform() < 0.2:
        clutter = _clutter_mask(rng, h, w)
        gray = rng.uniform(90, 170)
        shade = gray + 25 * smooth_noise(rng, h, w, (h // 6, w // 6))
        image[clutter] = shade[clutter][:, None]
        segment_map[clutter] = VOID

    num_stuff = len(seg_categories)
    full_areas: List[int] = []  # unoccluded area of each object; its segment is num_stuff + k
    min_area = _MIN_AREA_FRACTION * h * w
    for _ in range(rng.choice([1, 2, 3, 4], p=[0.25, 0.35, 0.25, 0.15])):
        for _attempt in range(20):
            cat = things[rng.integers(len(things))]
            r = rng.uniform(0.12, 0.25) * min(h, w)
            cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
            mask = SHAPES[categories[cat]["shape"]](h, w, cx, cy, r, rng)
            if mask.sum() < min_area or not _keeps_visible(
                segment_map, mask, num_stuff, full_areas, min_area
            ):
                continue
            c1, c2 = _object_colors(rng, categories[cat]["hue"])
            if np.linalg.norm(image[mask].mean(axis=0) - c1) < _MIN_CONTRAST:
                continue
            names = sorted(OBJECT_TEXTURES)
            texture = OBJECT_TEXTURES[names[rng.integers(len(names))]](rng, h, w, c1, c2)
            image[mask] = texture[mask]
            segment_map[mask] = len(seg_categories)
            seg_categories.append(cat)
            full_areas.append(int(mask.sum()))
            break

    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Scene(image, segment_map, seg_categories)


def _keeps_visible(
    segment_map: np.ndarray,
    mask: np.ndarray,
    num_stuff: int,
    full_areas: List[int],
    min_area: float,
) -> bool:
    """Whether every object placed so far keeps enough of its area if `mask` is drawn on top."""
    for k, full in enumerate(full_areas):
        remaining = np.count_nonzero((segment_map == num_stuff + k) & ~mask)
        if remaining < max(_MIN_VISIBLE_FRACTION * full, min_area):
            return False
    return True
