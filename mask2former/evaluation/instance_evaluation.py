"""COCO-style instance segmentation AP for datasets whose thing ids are not contiguous."""

import itertools
import json
import os
from typing import Dict, List, Optional

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import (
    COCOeval,
    COCOeval_opt,
    _evaluate_predictions_on_coco,
)
from detectron2.utils.file_io import PathManager

__all__ = ["InstanceSegEvaluator"]


class InstanceSegEvaluator(COCOEvaluator):
    """
    :class:`COCOEvaluator` for datasets whose ``thing_dataset_id_to_contiguous_id`` does not map
    onto ``0 .. num_things - 1``: e.g. ADE20K or Mapillary Vistas panoptic, where the model's
    contiguous ids cover stuff and thing classes together, so thing ids have gaps.

    Predicted contiguous ids are mapped back to the dataset ids of the ground-truth json
    (``metadata.json_file``), and per-category AP is named from that json's categories.
    """

    def _eval_predictions(self, predictions: List[Dict], img_ids: Optional[List[int]] = None):
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            contiguous_to_dataset = {
                v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()
            }
            for result in coco_results:
                category_id = result["category_id"]
                if category_id not in contiguous_to_dataset:
                    raise ValueError(
                        f"A prediction has class {category_id}, which is not a thing class of "
                        f"dataset {self._metadata.name!r} (thing contiguous ids: "
                        f"{sorted(contiguous_to_dataset)})"
                    )
                result["category_id"] = contiguous_to_dataset[category_id]

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info("Saving results to {}".format(file_path))
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        # COCOeval's precision array is indexed by the sorted category ids of the gt json
        class_names = [
            self._coco_api.cats[cat_id]["name"] for cat_id in sorted(self._coco_api.getCatIds())
        ]
        for task in sorted(tasks):
            if task not in {"bbox", "segm", "keypoints"}:
                raise ValueError(f"Unknown COCO evaluation task {task!r}")
            coco_eval = (
                _evaluate_predictions_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    cocoeval_fn=COCOeval_opt if self._use_fast_impl else COCOeval,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                if len(coco_results) > 0
                else None  # pycocotools does not handle empty results
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=class_names
            )
