"""
Drawing video instance predictions: every track keeps one colour in all frames.

detectron2's ``Visualizer`` picks a random colour per instance in each frame; a track would
flicker between colours. :class:`TrackVisualizer` takes the colours from the caller, who picks
one per track for the whole video (:func:`track_colors`).
"""
from typing import List, Optional, Sequence

import numpy as np

from detectron2.structures import Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, GenericMask, Visualizer, _create_text_labels

__all__ = ["TrackVisualizer", "track_colors"]

Color = Sequence[float]  # RGB in [0, 1]


def track_colors(num_tracks: int) -> List[Color]:
    """One distinct RGB colour (in [0, 1]) per track, the same for a given track index in every
    video: detectron2's palette, in order, repeated after its 74 colours."""
    palette = colormap(rgb=True, maximum=1)
    return [tuple(float(c) for c in palette[i % len(palette)]) for i in range(num_tracks)]


class TrackVisualizer(Visualizer):
    """A ``Visualizer`` for one frame whose instances are tracks drawn in given colours."""

    def draw_instance_predictions(
        self, predictions: Instances, colors: Optional[Sequence[Color]] = None
    ):
        """
        Args:
            predictions: the frame's tracks: ``pred_masks`` (N, H, W) bool, ``scores`` (N,),
                ``pred_classes`` (N,); a track absent from the frame has an empty mask.
            colors: N RGB colours in [0, 1], one per track (default: :func:`track_colors`).

        Returns:
            the ``VisImage`` with each track's mask, label "[track] class score" and no box.
        """
        num = len(predictions)
        colors = list(colors) if colors is not None else track_colors(num)
        if len(colors) != num:
            raise ValueError(f"TrackVisualizer: {len(colors)} colours for {num} tracks")
        if num == 0:
            return self.output
        classes = predictions.pred_classes.tolist()
        scores = predictions.scores if predictions.has("scores") else None
        labels = _create_text_labels(classes, scores, self.metadata.get("thing_classes", None))
        labels = [f"[{i}] {label}" for i, label in enumerate(labels)]
        masks = np.asarray(predictions.pred_masks)
        # a track absent from this frame is not drawn (an empty mask has no polygon)
        present = [i for i in range(num) if masks[i].any()]
        if self._instance_mode == ColorMode.IMAGE_BW:
            self.output.reset_image(self._create_grayscale_image(masks[present].any(axis=0)))
        self.overlay_instances(
            masks=[GenericMask(masks[i], self.output.height, self.output.width) for i in present],
            labels=[labels[i] for i in present],
            assigned_colors=[colors[i] for i in present],
            alpha=0.5,
        )
        return self.output
