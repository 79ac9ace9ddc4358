"""
detectron2's semantic evaluators, also fed the label form of the semantic output
(``MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT "labels"``: "sem_seg_labels" (H, W) instead of
"sem_seg" (K, H, W) scores).

detectron2's ``SemSegEvaluator`` and ``CityscapesSemSegEvaluator`` read only the argmax over
classes of an output's "sem_seg"; given the labels, that argmax is the labels themselves, so
the metrics are those of the scores the labels come from. Scores on the CPU are reduced here by
:func:`~mask2former.modeling.segment_assembly.argmax_over_first_dim`, the same indices as
``torch.argmax`` several times faster (about 2x at ADE20K's 150 x 512 x 683, 5x at 8 x 128 x
128): a per-image cost of the evaluation loop.
"""
from typing import Dict, List, Optional

import torch

from detectron2.evaluation import CityscapesSemSegEvaluator, SemSegEvaluator

from ..modeling.segment_assembly import SEMANTIC_LABELS, argmax_over_first_dim

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


def _labels(output: Dict) -> Optional[torch.Tensor]:
    """The (H, W) labels of one output, when this module computes them: given, or the argmax of
    NaN-free (K, H, W) scores on the CPU (where torch.argmax would pick a NaN); else None."""
    if SEMANTIC_LABELS in output:
        return output[SEMANTIC_LABELS]
    scores = output.get("sem_seg")
    if (
        isinstance(scores, torch.Tensor) and scores.device.type == "cpu" and scores.dim() == 3
        and len(scores) and scores.is_floating_point() and not scores.isnan().any()
    ):
        return argmax_over_first_dim(scores)
    return None


def _with_scores_stand_in(outputs: List[Dict]) -> List[Dict]:
    """``outputs`` where each semantic output whose labels :func:`_labels` gives is replaced by a
    stand-in of its scores; the others are passed as they are."""
    stand_ins = []
    for output in outputs:
        labels = _labels(output)
        stand_ins.append(output if labels is None else {**output, "sem_seg": _ArgmaxOfScores(labels)})
    return stand_ins


class _AcceptsSemanticLabels:
    """Mixin of a detectron2 semantic evaluator: ``process`` takes either form of the output."""

    def process(self, inputs, outputs):
        super().process(inputs, _with_scores_stand_in(outputs))


class LabelMapSemSegEvaluator(_AcceptsSemanticLabels, SemSegEvaluator):
    """:class:`SemSegEvaluator` (mIoU) that also takes "sem_seg_labels" (H, W), and reduces CPU
    scores faster; the same metrics."""


class LabelMapCityscapesSemSegEvaluator(_AcceptsSemanticLabels, CityscapesSemSegEvaluator):
    """:class:`CityscapesSemSegEvaluator` that also takes "sem_seg_labels" (H, W), and reduces
    CPU scores faster; the same metrics."""
