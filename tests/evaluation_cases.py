"""Cases shared by the evaluator tests (ours in tests/evaluation/, detectron2's in
tests/third_party/): small masks, their COCO json, the numbers pycocotools gives for them, and
datasets registered for them."""
import contextlib
import io
import json
from typing import Dict, List, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

H, W = 40, 48
_PREFIX = "_test_evaluation_"

# per image: [(dataset category id, (H, W) bool mask)]
GroundTruth = Dict[int, List[Tuple[int, np.ndarray]]]
# per image: [(dataset category id, (H, W) bool mask, score)]
Predictions = Dict[int, List[Tuple[int, np.ndarray, float]]]


def register(name: str, dicts=(), **metadata) -> str:
    """Registers (again) a dataset of ``dicts`` with ``metadata``; returns its full name."""
    name = _PREFIX + name
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    dicts = list(dicts)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(**metadata)
    return name


def rect(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def disk(cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def rle(mask: np.ndarray) -> dict:
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


# ---------------------------------------------------------------- instance segmentation (AP)
def instance_case() -> Tuple[GroundTruth, Predictions]:
    """Categories 3 ("cat") and 7 ("dog") over three images, with good, poor, false-positive and
    wrong-class predictions: a case of non-trivial AP."""
    gts = {
        1: [(3, rect(2, 2, 20, 20)), (7, disk(28, 34, 8)), (3, rect(25, 2, 38, 14))],
        2: [(7, rect(5, 10, 30, 40)), (3, disk(10, 8, 5))],
        3: [(3, rect(0, 0, 12, 47))],
    }
    preds = {
        1: [
            (3, rect(3, 2, 20, 21), 0.9),  # good match
            (7, disk(28, 33, 7), 0.8),  # good match
            (3, rect(25, 2, 33, 10), 0.3),  # poor overlap
            (7, rect(0, 30, 10, 47), 0.6),  # false positive
        ],
        2: [
            (7, rect(6, 12, 30, 38), 0.95),
            (3, disk(10, 9, 5), 0.4),
            (3, rect(30, 0, 40, 10), 0.5),  # false positive
        ],
        3: [(7, rect(0, 0, 12, 47), 0.7), (3, rect(1, 1, 12, 40), 0.65)],  # wrong class first
    }
    return gts, preds


def write_coco_gt(path: str, gts: GroundTruth, categories: Dict[int, str]) -> None:
    images, annotations = [], []
    for image_id, objs in gts.items():
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": H, "width": W})
        for cat, mask in objs:
            encoded = rle(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": encoded,
                    "area": float(mask_util.area(encoded)),
                    "bbox": [float(v) for v in mask_util.toBbox(encoded)],
                    "iscrowd": 0,
                }
            )
    cats = [{"id": cid, "name": name} for cid, name in categories.items()]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": cats}, f)


def write_instance_case(directory) -> Tuple[GroundTruth, Predictions, str]:
    """The instance case with its ground truth written as COCO json in ``directory``."""
    gts, preds = instance_case()
    gt_json = str(directory / "instances.json")
    write_coco_gt(gt_json, gts, {3: "cat", 7: "dog"})
    return gts, preds, gt_json


def pycocotools_segm_stats(gt_json: str, preds: Predictions) -> np.ndarray:
    """COCOeval's 12 mask-AP stats of ``preds`` against ``gt_json``, in percent."""
    results = [
        {"image_id": image_id, "category_id": cat, "segmentation": rle(mask), "score": score}
        for image_id, objs in preds.items()
        for cat, mask, score in objs
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_json)
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats * 100


def run_instance_evaluator(evaluator, preds: Predictions, dataset_to_contiguous: Dict[int, int]) -> dict:
    """``evaluator``'s results for ``preds`` given as the model's Instances, one image a call."""
    evaluator.reset()
    for image_id, objs in preds.items():
        masks = torch.from_numpy(np.stack([m for _, m, _ in objs]))
        inst = Instances((H, W))
        inst.pred_masks = masks
        inst.pred_boxes = Boxes(torch.zeros(len(objs), 4))
        inst.scores = torch.tensor([s for _, _, s in objs])
        inst.pred_classes = torch.tensor([dataset_to_contiguous[c] for c, _, _ in objs])
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    return evaluator.evaluate()
