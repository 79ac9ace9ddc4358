"""
SSD-style photometric distortion: random brightness, contrast, saturation and hue, each
applied with probability 1/2, contrast either first or last (as in the SSD paper's
augmentation, used by MaskFormer for semantic segmentation).
"""

from typing import Tuple

import cv2
import numpy as np
from detectron2.data.transforms import Augmentation
from fvcore.transforms.transform import Transform

__all__ = ["ColorAugSSDTransform", "SSDColorJitter"]


class SSDColorJitter(Transform):
    """
    The deterministic photometric change chosen by :class:`ColorAugSSDTransform`; it leaves
    geometry (coords, segmentation) alone. Works on uint8 RGB or BGR images (H, W, 3).
    """

    def __init__(
        self,
        img_format: str,
        brightness_delta: float = 0.0,
        contrast_alpha: float = 1.0,
        saturation_alpha: float = 1.0,
        hue_delta: int = 0,
        contrast_first: bool = True,
    ):
        super().__init__()
        if img_format not in ("RGB", "BGR"):
            raise ValueError(f"ColorAugSSD supports the RGB and BGR formats, got {img_format!r}")
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"ColorAugSSD expects (H, W, 3) uint8 images, got {img.shape} {img.dtype}"
            )
        bgr = img[:, :, ::-1] if self.img_format == "RGB" else img
        out = bgr.astype(np.float32) + self.brightness_delta
        if self.contrast_first:
            out = out * self.contrast_alpha
        out = np.clip(out, 0, 255).astype(np.uint8)
        if self.saturation_alpha != 1.0 or self.hue_delta != 0:
            hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV).astype(np.int32)
            hsv[:, :, 0] = (hsv[:, :, 0] + self.hue_delta) % 180  # OpenCV hue: 0..179
            hsv[:, :, 1] = np.clip(hsv[:, :, 1] * self.saturation_alpha, 0, 255)
            out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
        if not self.contrast_first:
            out = np.clip(out.astype(np.float32) * self.contrast_alpha, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out[:, :, ::-1] if self.img_format == "RGB" else out)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        raise NotImplementedError("a color distortion loses information and has no inverse")


class ColorAugSSDTransform(Augmentation):
    """
    Samples an :class:`SSDColorJitter` per image: brightness += U(-delta, delta), contrast and
    saturation *= U(low, high), hue += U(-hue_delta, hue_delta) (OpenCV units, 180 = full
    turn); each with probability 1/2.
    """

    def __init__(
        self,
        img_format: str,
        brightness_delta: int = 32,
        contrast_range: Tuple[float, float] = (0.5, 1.5),
        saturation_range: Tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ):
        super().__init__()
        if img_format not in ("RGB", "BGR"):
            raise ValueError(f"ColorAugSSD supports the RGB and BGR formats, got {img_format!r}")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> SSDColorJitter:
        def maybe(sample, identity):
            return sample() if np.random.rand() < 0.5 else identity

        return SSDColorJitter(
            self.img_format,
            brightness_delta=maybe(
                lambda: np.random.uniform(-self.brightness_delta, self.brightness_delta), 0.0
            ),
            contrast_alpha=maybe(lambda: np.random.uniform(*self.contrast_range), 1.0),
            saturation_alpha=maybe(lambda: np.random.uniform(*self.saturation_range), 1.0),
            hue_delta=maybe(lambda: int(np.random.randint(-self.hue_delta, self.hue_delta + 1)), 0),
            contrast_first=bool(np.random.rand() < 0.5),
        )
