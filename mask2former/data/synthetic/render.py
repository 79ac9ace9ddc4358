"""
Drawing primitives of the synthetic dataset: shape masks, object textures, stuff textures.

Every function draws on a full (H, W) canvas and takes its randomness from the ``rng`` it is
given, so a scene is a pure function of its seed. Colors are float RGB in [0, 255].
"""

import colorsys
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

__all__ = ["SHAPES", "OBJECT_TEXTURES", "STUFF_TEXTURES", "hsv_color", "smooth_noise"]

_POLY_SHIFT = 4  # cv2.fillPoly fixed-point bits: sub-pixel vertex positions


def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + 0.5, ys + 0.5


def _rotated(xs, ys, cx, cy, angle):
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = xs - cx, ys - cy
    return c * dx + s * dy, -s * dx + c * dy


def _polygon(h: int, w: int, pts: np.ndarray) -> np.ndarray:
    canvas = np.zeros((h, w), np.uint8)
    fixed = np.round(pts * (1 << _POLY_SHIFT)).astype(np.int32)
    cv2.fillPoly(canvas, [fixed], 1, lineType=cv2.LINE_8, shift=_POLY_SHIFT)
    return canvas.astype(bool)


def _ellipse(h, w, cx, cy, r, rng) -> np.ndarray:
    xs, ys = _grid(h, w)
    u, v = _rotated(xs, ys, cx, cy, rng.uniform(0, np.pi))
    a, b = r, r * rng.uniform(0.65, 1.0)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _rectangle(h, w, cx, cy, r, rng) -> np.ndarray:
    xs, ys = _grid(h, w)
    u, v = _rotated(xs, ys, cx, cy, rng.uniform(0, np.pi))
    return (np.abs(u) <= r * rng.uniform(0.7, 0.95)) & (np.abs(v) <= r * rng.uniform(0.5, 0.9))


def _triangle(h, w, cx, cy, r, rng) -> np.ndarray:
    angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.2, 0.2, 3)
    pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
    return _polygon(h, w, pts)


def _star(h, w, cx, cy, r, rng) -> np.ndarray:
    n = 5
    angles = rng.uniform(0, 2 * np.pi) + np.arange(2 * n) * np.pi / n
    radii = np.where(np.arange(2 * n) % 2 == 0, r, r * rng.uniform(0.4, 0.5))
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    return _polygon(h, w, pts)


def _ring(h, w, cx, cy, r, rng) -> np.ndarray:
    xs, ys = _grid(h, w)
    u, v = _rotated(xs, ys, cx, cy, rng.uniform(0, np.pi))
    q = u**2 + (v / rng.uniform(0.8, 1.0)) ** 2
    return (q <= r**2) & (q >= (r * rng.uniform(0.45, 0.6)) ** 2)


# shape name (categories.json "shape") -> f(h, w, cx, cy, radius, rng) -> (H, W) bool mask
SHAPES: Dict[str, Callable[..., np.ndarray]] = {
    "ellipse": _ellipse,
    "rectangle": _rectangle,
    "triangle": _triangle,
    "star": _star,
    "ring": _ring,
}


def hsv_color(hue_deg: float, sat: float, val: float) -> np.ndarray:
    """(3,) float RGB in [0, 255] from hue in degrees and saturation / value in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360) / 360.0, sat, val), np.float32) * 255


def smooth_noise(rng, h: int, w: int, cells: Tuple[int, int]) -> np.ndarray:
    """(H, W) float32 noise in about [-1, 1], smooth at the scale of an (cells_y, cells_x) grid."""
    coarse = rng.uniform(-1, 1, size=cells).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _solid(rng, h, w, c1, c2):
    xs, ys = _grid(h, w)
    # a faint linear shading, so that "solid" is not a single value
    t = np.cos(rng.uniform(0, 2 * np.pi)) * xs / w + np.sin(rng.uniform(0, 2 * np.pi)) * ys / h
    return c1[None, None] * (1.0 + 0.15 * (t[..., None] - 0.5))


def _stripes(rng, h, w, c1, c2):
    xs, ys = _grid(h, w)
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 12)
    on = ((xs * np.cos(theta) + ys * np.sin(theta)) // (period / 2)) % 2 == 0
    return np.where(on[..., None], c1[None, None], c2[None, None])


def _checker(rng, h, w, c1, c2):
    xs, ys = _grid(h, w)
    cell = rng.uniform(5, 9)
    on = ((xs // cell) + (ys // cell)) % 2 == 0
    return np.where(on[..., None], c1[None, None], c2[None, None])


def _mottled(rng, h, w, c1, c2):
    t = smooth_noise(rng, h, w, (h // 8, w // 8))[..., None] * 0.5 + 0.5
    return c1[None, None] * (1 - t) + c2[None, None] * t


# texture name -> f(rng, h, w, color1, color2) -> (H, W, 3) float image
OBJECT_TEXTURES: Dict[str, Callable[..., np.ndarray]] = {
    "solid": _solid,
    "stripes": _stripes,
    "checker": _checker,
    "noise": _mottled,
}


def _clouds(rng, h, w, base):
    _, ys = _grid(h, w)
    gradient = (0.85 + 0.25 * ys / h)[..., None] * base[None, None]
    cloud = np.clip(smooth_noise(rng, h, w, (4, 5)) * 1.5 - 0.3, 0, 1)[..., None]
    img = gradient * (1 - 0.6 * cloud) + 235.0 * 0.6 * cloud
    return img + rng.normal(0, 3, (h, w, 1))


def _blades(rng, h, w, base):
    # noise stretched vertically: thin upright streaks like grass blades
    blades = cv2.resize(rng.uniform(-1, 1, (max(h // 8, 2), w)).astype(np.float32), (w, h))
    return base[None, None] * (1 + 0.35 * blades[..., None]) + rng.normal(0, 6, (h, w, 1))


def _waves(rng, h, w, base):
    xs, ys = _grid(h, w)
    period = rng.uniform(5, 8)
    phase = 2 * np.pi * ys / period + 1.2 * np.sin(2 * np.pi * xs / rng.uniform(25, 45))
    img = base[None, None] + 28 * np.sin(phase)[..., None] * np.array([0.6, 0.8, 1.0])
    return img + rng.normal(0, 3, (h, w, 1))


# categories.json "texture" of a stuff class -> f(rng, h, w, base_rgb) -> (H, W, 3) float image
STUFF_TEXTURES: Dict[str, Callable[..., np.ndarray]] = {
    "clouds": _clouds,
    "blades": _blades,
    "waves": _waves,
}
