"""Config keys of the video model (Mask2Former for video instance segmentation)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_maskformer2_video_config"]


def add_maskformer2_video_config(cfg: CN) -> None:
    """
    Add the video keys to a config that already has the image ones, in place (call
    ``add_deeplab_config`` and ``add_maskformer2_config`` first).

    ``INPUT.SAMPLING_FRAME_NUM`` frames are sampled per training clip, within
    ``INPUT.SAMPLING_FRAME_RANGE`` frames of a random reference frame, in temporal order unless
    ``INPUT.SAMPLING_FRAME_SHUFFLE``.
    """
    cfg.INPUT.SAMPLING_FRAME_NUM = 2
    cfg.INPUT.SAMPLING_FRAME_RANGE = 20
    cfg.INPUT.SAMPLING_FRAME_SHUFFLE = False
    # names of extra clip augmentations ("brightness", "contrast", "saturation", "rotation")
    cfg.INPUT.AUGMENTATIONS = []
    # Not a reference key (this project's own): frames per window of the bounded-memory
    # inference of long videos; 0 runs the whole clip at once, as the reference does.
    cfg.MODEL.MASK_FORMER.TEST.WINDOW_SIZE = 0
