"""
Run a video Mask2Former model on the frames of a video and draw its tracks.

:class:`VideoPredictor` is detectron2's ``DefaultPredictor`` for a whole clip: frames in, the
model's video output out. :class:`VisualizationDemo` draws each track in one colour through
the whole video (:mod:`video_visualizer`).
"""
import logging
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine.defaults import DefaultPredictor
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, VisImage

import mask2former_video.video_maskformer_model  # noqa: F401  (registers VideoMaskFormer)
from demo.predictor import DemoError, build_predictor

# the module next to this file: `python demo_video/demo.py` puts demo_video/ first on sys.path
from video_visualizer import TrackVisualizer, track_colors

__all__ = ["DemoError", "VideoPredictor", "VisualizationDemo", "build_video_predictor"]

logger = logging.getLogger("demo_video")


class VideoPredictor(DefaultPredictor):
    """
    detectron2's ``DefaultPredictor`` for a whole video; build it with
    :func:`build_video_predictor` (checked weights). Called on the frames of one video (BGR
    (H, W, 3) uint8, as cv2 reads them, all of one size), it resizes them as at test time and
    returns the model's output at the frames' size: ``{"image_size", "pred_scores",
    "pred_labels", "pred_masks"}`` (masks (T, H, W) bool).
    """

    def __call__(self, frames: Sequence[np.ndarray]) -> Dict:
        if not len(frames):
            raise DemoError("The video has no frame")
        height, width = frames[0].shape[:2]
        inputs = []
        for i, frame in enumerate(frames):
            if frame.shape[:2] != (height, width):
                raise DemoError(
                    f"Frame {i} is {frame.shape[1]}x{frame.shape[0]}, frame 0 is "
                    f"{width}x{height}: all frames of a video must have one size"
                )
            if self.input_format == "RGB":
                frame = frame[:, :, ::-1]
            image = self.aug.get_transform(frame).apply_image(frame)
            inputs.append(torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))))
        with torch.no_grad():
            (output,) = self.model([{"image": inputs, "height": height, "width": width}])
        return output


def build_video_predictor(cfg: CfgNode) -> VideoPredictor:
    """A :class:`VideoPredictor` for ``cfg`` with the checked weights of MODEL.WEIGHTS (a
    :class:`DemoError` names what does not fit)."""
    return build_predictor(cfg, VideoPredictor)


class VisualizationDemo:
    """Predict the tracks of a video and draw them with the config's dataset metadata."""

    def __init__(
        self,
        cfg: CfgNode,
        instance_mode: ColorMode = ColorMode.IMAGE,
        parallel: bool = False,
        confidence_threshold: float = 0.5,
    ):
        """
        Args:
            cfg: the model's config; MODEL.WEIGHTS is loaded and must fit the model.
            instance_mode: how the frames are drawn under the tracks (IMAGE_BW: gray).
            parallel: not supported for videos (the whole clip is one input); a warning.
            confidence_threshold: tracks scoring at most this are not drawn.
        """
        names = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
        self.metadata = MetadataCatalog.get(names[0] if names else "__unused")
        self.instance_mode = instance_mode
        self.confidence_threshold = confidence_threshold
        if parallel:
            logger.warning("parallel=True is not supported for videos: running in one process")
        self.predictor = build_video_predictor(cfg)

    def tracks(self, predictions: Dict) -> Tuple[List[float], List[int], List[torch.Tensor]]:
        """The (scores, labels, masks (T, H, W)) of the tracks scoring above the threshold,
        best first."""
        kept = [
            (float(s), int(label), m)
            for s, label, m in zip(
                predictions["pred_scores"], predictions["pred_labels"], predictions["pred_masks"]
            )
            if s > self.confidence_threshold
        ]
        kept.sort(key=lambda track: -track[0])
        return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]

    def draw_frames(self, frames: Sequence[np.ndarray], predictions: Dict) -> Iterator[VisImage]:
        """One drawing per frame (``frames`` BGR), track ``i`` in colour ``track_colors()[i]``
        in all of them."""
        scores, labels, masks = self.tracks(predictions)
        colors = track_colors(len(scores))
        height, width = frames[0].shape[:2] if len(frames) else (0, 0)
        for t, frame in enumerate(frames):
            instances = Instances((height, width))
            instances.scores = torch.tensor(scores, dtype=torch.float32)
            instances.pred_classes = torch.tensor(labels, dtype=torch.int64)
            instances.pred_masks = (
                torch.stack([m[t] for m in masks])
                if masks
                else torch.zeros((0, height, width), dtype=torch.bool)
            )
            visualizer = TrackVisualizer(
                frame[:, :, ::-1], self.metadata, instance_mode=self.instance_mode
            )
            yield visualizer.draw_instance_predictions(instances, colors)

    def run_on_video(self, frames: Sequence[np.ndarray]) -> Tuple[Dict, Iterator[VisImage]]:
        """
        Args:
            frames: the video's frames, BGR (H, W, 3) uint8, all of one size.

        Returns:
            the model's predictions for the whole video and an iterator over the drawings,
            one per frame.
        """
        predictions = self.predictor(frames)
        return predictions, self.draw_frames(frames, predictions)
