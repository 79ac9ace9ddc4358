"""Evaluators of Mask2Former: detectron2's, plus instance AP for non-COCO id spaces."""

from .build import build_evaluator
from .instance_evaluation import InstanceSegEvaluator

__all__ = ["build_evaluator", "InstanceSegEvaluator"]
