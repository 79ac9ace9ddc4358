"""
detectron2's semantic evaluators, also fed the label form of the semantic output
(``MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT "labels"``: "sem_seg_labels" (H, W) instead of
"sem_seg" (K, H, W) scores).

detectron2's ``SemSegEvaluator`` and ``CityscapesSemSegEvaluator`` read only the argmax over
classes of an output's "sem_seg"; given the labels, that argmax is the labels themselves, so
the metrics are those of the scores the labels come from.
"""
from typing import Dict, List

import torch

from detectron2.evaluation import CityscapesSemSegEvaluator, SemSegEvaluator

from ..modeling.segment_assembly import SEMANTIC_LABELS

__all__ = ["LabelMapSemSegEvaluator", "LabelMapCityscapesSemSegEvaluator"]


class _ArgmaxOfScores:
    """Stands for an image's (K, H, W) semantic scores whose argmax over classes is known:
    what detectron2's semantic evaluators take of "sem_seg"."""

    def __init__(self, labels: torch.Tensor):
        self.labels = labels

    def argmax(self, dim: int) -> torch.Tensor:
        if dim != 0:
            raise ValueError(f"the label form of the semantic output has only the argmax over classes (dim 0), not dim {dim}")
        return self.labels


def _with_scores_stand_in(outputs: List[Dict]) -> List[Dict]:
    """``outputs`` where each label-form semantic output also appears as "sem_seg" scores'
    stand-in; score-form outputs are passed as they are."""
    return [
        {**output, "sem_seg": _ArgmaxOfScores(output[SEMANTIC_LABELS])} if SEMANTIC_LABELS in output else output
        for output in outputs
    ]


class _AcceptsSemanticLabels:
    """Mixin of a detectron2 semantic evaluator: ``process`` takes either form of the output."""

    def process(self, inputs, outputs):
        super().process(inputs, _with_scores_stand_in(outputs))


class LabelMapSemSegEvaluator(_AcceptsSemanticLabels, SemSegEvaluator):
    """:class:`SemSegEvaluator` (mIoU) that also takes "sem_seg_labels" (H, W)."""


class LabelMapCityscapesSemSegEvaluator(_AcceptsSemanticLabels, CityscapesSemSegEvaluator):
    """:class:`CityscapesSemSegEvaluator` that also takes "sem_seg_labels" (H, W)."""
