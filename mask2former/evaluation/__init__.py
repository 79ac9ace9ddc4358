"""Evaluators of Mask2Former: detectron2's, plus instance AP for non-COCO id spaces."""

from .build import build_evaluator
from .instance_evaluation import InstanceSegEvaluator
from .semantic_evaluation import LabelMapCityscapesSemSegEvaluator, LabelMapSemSegEvaluator
from .threaded import ThreadedEvaluators

__all__ = [
    "build_evaluator",
    "InstanceSegEvaluator",
    "LabelMapSemSegEvaluator",
    "LabelMapCityscapesSemSegEvaluator",
    "ThreadedEvaluators",
]
