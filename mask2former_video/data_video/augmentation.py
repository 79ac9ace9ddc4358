"""
Augmentations for video clips.

A clip must be augmented the same way in every frame. :class:`YTVISDatasetMapper` draws the
augmentations once per clip (on its first frame) and applies the same transforms to every
frame. The clip-consistent :class:`ResizeShortestEdge` and :class:`RandomFlip` (the original
implementation's names) serve code that calls an augmentation once per frame instead: they draw
a new transform only every ``clip_frame_cnt`` calls and return the same one in between.
"""
import sys
from typing import List

from detectron2.config import CfgNode
from detectron2.data import transforms as T
from PIL import Image

__all__ = ["ResizeShortestEdge", "RandomFlip", "build_augmentation"]

_BY_CLIP = "_by_clip"  # the original's suffix of clip-consistent sampling styles


class _ClipConsistent:
    """Draws a transform once every ``clip_frame_cnt`` calls of get_transform and repeats it."""

    def _start_clips(self, clip_frame_cnt: int) -> None:
        if clip_frame_cnt < 1:
            raise ValueError(f"clip_frame_cnt must be >= 1, got {clip_frame_cnt}")
        self.clip_frame_cnt = clip_frame_cnt
        self._calls = 0
        self._transform = None

    def get_transform(self, *args) -> T.Transform:
        if self._calls % self.clip_frame_cnt == 0:
            self._transform = super().get_transform(*args)
        self._calls += 1
        return self._transform


class ResizeShortestEdge(_ClipConsistent, T.ResizeShortestEdge):
    """
    detectron2's ResizeShortestEdge, drawn once per `clip_frame_cnt` frames. `sample_style`
    also takes the original's "range_by_clip" and "choice_by_clip".
    """

    def __init__(
        self,
        short_edge_length,
        max_size: int = sys.maxsize,
        sample_style: str = "range",
        interp=Image.BILINEAR,
        clip_frame_cnt: int = 1,
    ):
        if sample_style.endswith(_BY_CLIP):
            sample_style = sample_style[: -len(_BY_CLIP)]
        super().__init__(short_edge_length, max_size, sample_style, interp)
        self._start_clips(clip_frame_cnt)


class RandomFlip(_ClipConsistent, T.RandomFlip):
    """detectron2's RandomFlip, drawn once per `clip_frame_cnt` frames."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False, clip_frame_cnt: int = 1):
        super().__init__(prob, horizontal=horizontal, vertical=vertical)
        self._start_clips(clip_frame_cnt)


# INPUT.AUGMENTATIONS names (the original's) -> augmentation
_EXTRA_AUGMENTATIONS = {
    "brightness": lambda: T.RandomBrightness(0.9, 1.1),
    "contrast": lambda: T.RandomContrast(0.9, 1.1),
    "saturation": lambda: T.RandomSaturation(0.9, 1.1),
    "rotation": lambda: T.RandomRotation(
        [-15, 15], expand=False, center=[(0.4, 0.4), (0.6, 0.6)], sample_style="range"
    ),
}

# INPUT.RANDOM_FLIP -> (horizontal, vertical); "flip_by_clip" is the original's video setting
_FLIPS = {"horizontal": (True, False), "vertical": (False, True), "flip_by_clip": (True, False)}


def build_augmentation(cfg: CfgNode, is_train: bool) -> List[T.Augmentation]:
    """
    Training: [RandomCrop (if INPUT.CROP.ENABLED)], ResizeShortestEdge (MIN_SIZE_TRAIN,
    MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING), RandomFlip (INPUT.RANDOM_FLIP), then the
    INPUT.AUGMENTATIONS names ("brightness", "contrast", "saturation", "rotation").
    Test: ResizeShortestEdge (MIN_SIZE_TEST, MAX_SIZE_TEST).
    """
    if not is_train:
        return [ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augs: List[T.Augmentation] = []
    if cfg.INPUT.CROP.ENABLED:
        augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    augs.append(
        ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    )
    if cfg.INPUT.RANDOM_FLIP != "none":
        if cfg.INPUT.RANDOM_FLIP not in _FLIPS:
            raise ValueError(
                f"INPUT.RANDOM_FLIP = {cfg.INPUT.RANDOM_FLIP!r}: expected 'none' or one of {sorted(_FLIPS)}"
            )
        horizontal, vertical = _FLIPS[cfg.INPUT.RANDOM_FLIP]
        augs.append(RandomFlip(horizontal=horizontal, vertical=vertical))
    for name in cfg.INPUT.get("AUGMENTATIONS", []):
        if name not in _EXTRA_AUGMENTATIONS:
            raise ValueError(f"INPUT.AUGMENTATIONS: unknown name {name!r}, expected some of {sorted(_EXTRA_AUGMENTATIONS)}")
        augs.append(_EXTRA_AUGMENTATIONS[name]())
    return augs
