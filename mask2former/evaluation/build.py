"""Choose the evaluators of a dataset from its ``evaluator_type`` metadata and the config."""

import os
from typing import List, Optional

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
)

from .instance_evaluation import InstanceSegEvaluator
from .semantic_evaluation import LabelMapCityscapesSemSegEvaluator, LabelMapSemSegEvaluator
from .threaded import ThreadedEvaluators

__all__ = ["build_evaluator"]

# evaluator types whose datasets have semantic / panoptic ground truth
_SEMANTIC_TYPES = (
    "ade20k_panoptic_seg",
    "coco_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
)
_PANOPTIC_TYPES = (
    "coco_panoptic_seg",
    "ade20k_panoptic_seg",
    "cityscapes_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
)
# box AP from the tight boxes of the predicted masks, beside mask AP
_INSTANCE_TASKS = ("bbox", "segm")
# instance AP of panoptic datasets whose instance ground truth is not a COCO instance json
# with the model's thing classes (their thing ids index all classes)
_NON_COCO_INSTANCE_TYPES = (
    "ade20k_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
)


def build_evaluator(
    cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluators:
    """
    Evaluators for ``dataset_name``, chosen by ``MetadataCatalog.get(dataset_name).evaluator_type``
    and by which outputs the model produces (``MODEL.MASK_FORMER.TEST.{SEMANTIC,INSTANCE,
    PANOPTIC}_ON``):

    - "sem_seg": :class:`SemSegEvaluator` (mIoU; as :class:`LabelMapSemSegEvaluator`);
    - "coco" (COCO instance, ADE20K instance): :class:`COCOEvaluator` (box and mask AP; the
      boxes are the predicted masks' tight boxes);
    - panoptic types (coco / ade20k / mapillary_vistas / cityscapes "_panoptic_seg"): PQ with
      :class:`COCOPanopticEvaluator` if PANOPTIC_ON, mIoU if SEMANTIC_ON, AP if INSTANCE_ON
      (box and mask AP: COCO's ids with :class:`COCOEvaluator`, others with
      :class:`InstanceSegEvaluator`; Cityscapes with its own evaluators, mask AP);
    - "cityscapes_sem_seg" / "cityscapes_instance": detectron2's Cityscapes evaluators;
    - "lvis": :class:`LVISEvaluator` (box and mask AP).

    The semantic evaluators are detectron2's, subclassed to read either form of the semantic
    output (``MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT``; :mod:`.semantic_evaluation`).

    With ``TEST.EVALUATOR_THREADS`` > 0 (a project key; default 0) they process each batch on
    that many background threads (:class:`ThreadedEvaluators`), with the same metrics.

    Args:
        output_folder: where evaluators write predictions; default ``OUTPUT_DIR/inference``.

    Raises:
        NotImplementedError: no evaluator applies to the dataset and config.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    test = cfg.MODEL.MASK_FORMER.TEST
    evaluators: List[DatasetEvaluator] = []
    if evaluator_type == "sem_seg" or (evaluator_type in _SEMANTIC_TYPES and test.SEMANTIC_ON):
        evaluators.append(LabelMapSemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type in _PANOPTIC_TYPES and test.PANOPTIC_ON:
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
    if evaluator_type == "coco" or (evaluator_type == "coco_panoptic_seg" and test.INSTANCE_ON):
        # panoptic COCO: mask AP against the instance json in metadata.json_file
        evaluators.append(
            COCOEvaluator(dataset_name, tasks=_INSTANCE_TASKS, output_dir=output_folder)
        )
    if evaluator_type in _NON_COCO_INSTANCE_TYPES and test.INSTANCE_ON:
        evaluators.append(
            InstanceSegEvaluator(dataset_name, tasks=_INSTANCE_TASKS, output_dir=output_folder)
        )
    if evaluator_type == "cityscapes_sem_seg" or (
        evaluator_type == "cityscapes_panoptic_seg" and test.SEMANTIC_ON
    ):
        evaluators.append(LabelMapCityscapesSemSegEvaluator(dataset_name))
    if evaluator_type == "cityscapes_instance" or (
        evaluator_type == "cityscapes_panoptic_seg" and test.INSTANCE_ON
    ):
        evaluators.append(CityscapesInstanceEvaluator(dataset_name))
    if evaluator_type == "lvis":
        evaluators.append(
            LVISEvaluator(dataset_name, tasks=_INSTANCE_TASKS, output_dir=output_folder)
        )

    if not evaluators:
        raise NotImplementedError(
            f"No evaluator for dataset {dataset_name!r} with evaluator_type {evaluator_type!r} "
            f"(MODEL.MASK_FORMER.TEST: SEMANTIC_ON={test.SEMANTIC_ON}, "
            f"INSTANCE_ON={test.INSTANCE_ON}, PANOPTIC_ON={test.PANOPTIC_ON})"
        )
    threads = cfg.TEST.get("EVALUATOR_THREADS", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"cfg.TEST.EVALUATOR_THREADS must be an integer >= 0, got {threads!r}")
    if threads:
        return ThreadedEvaluators(evaluators, threads)
    return DatasetEvaluators(evaluators)
