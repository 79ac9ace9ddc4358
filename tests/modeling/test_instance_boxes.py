"""Instance boxes: the tight box of each predicted mask, and box AP beside mask AP."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.structures import BitMasks

from mask2former.config import add_maskformer2_config
from mask2former.evaluation import InstanceSegEvaluator, build_evaluator
from mask2former.modeling.postprocessing import (
    BlockwisePostProcessor,
    InferenceSettings,
    PlainPostProcessor,
    instances_from_query_masks,
    mask_boxes,
)

H, W = 10, 12


def _mask(*pixel_slices):
    """(H, W) bool, True on each (rows, cols) slice pair."""
    mask = torch.zeros(H, W, dtype=torch.bool)
    for rows, cols in pixel_slices:
        mask[rows, cols] = True
    return mask


# (mask, its box x0, y0, x1, y1): x1 / y1 one past the last column / row
HAND_MADE = [
    (_mask((slice(2, 5), slice(3, 9))), [3, 2, 9, 5]),  # rectangle inside
    (_mask((slice(1, 2), slice(1, 4)), (slice(6, 9), slice(8, 10))), [1, 1, 10, 9]),  # two parts
    (_mask((slice(3, 8), slice(5, 6)), (slice(7, 8), slice(5, 9))), [5, 3, 9, 8]),  # an L
    (_mask((slice(None), slice(None))), [0, 0, W, H]),  # the whole image
    (_mask((slice(7, None), slice(0, 2))), [0, 7, 2, H]),  # bottom-left corner
    (_mask((slice(0, 1), slice(0, W))), [0, 0, W, 1]),  # top row
    (_mask((slice(0, 1), slice(0, 1))), [0, 0, 1, 1]),  # single pixel, first
    (_mask((slice(H - 1, H), slice(W - 1, W))), [W - 1, H - 1, W, H]),  # single pixel, last
    (_mask((slice(4, 5), slice(6, 7))), [6, 4, 7, 5]),  # single pixel inside
    (_mask(), [0, 0, 0, 0]),  # empty
]


def test_boxes_equal_hand_made_mask_extents():
    masks = torch.stack([m for m, _ in HAND_MADE])
    boxes = mask_boxes(masks)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [box for _, box in HAND_MADE]


def _instances(binary_masks, instance_to_mask):
    n = len(instance_to_mask)
    return instances_from_query_masks(
        torch.linspace(0.9, 0.5, n), torch.arange(n), binary_masks,
        binary_masks.float() * 0.8 + 0.1, torch.tensor(instance_to_mask, dtype=torch.long),
    )


def test_instances_get_the_boxes_of_their_query_masks():
    masks = torch.stack([m for m, _ in HAND_MADE])
    # several instances share a query's mask; one mask is used by none
    instance_to_mask = [0, 0, 3, 6, 9, 9, 2, 7, 8, 1, 4, 5]
    instances = _instances(masks, instance_to_mask)
    assert instances.pred_boxes.tensor.tolist() == [HAND_MADE[i][1] for i in instance_to_mask]
    assert torch.equal(instances.pred_masks, masks[instance_to_mask].float())


def test_empty_masks_get_zero_boxes_without_error():
    empty = torch.zeros(3, H, W, dtype=torch.bool)
    instances = _instances(empty, [0, 1, 2, 1])
    assert torch.equal(instances.pred_boxes.tensor, torch.zeros(4, 4))
    assert torch.isfinite(instances.scores).all()
    none = _instances(torch.zeros(0, H, W, dtype=torch.bool), [])
    assert len(none) == 0 and none.pred_boxes.tensor.shape == (0, 4)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.02, 0.5])
def test_boxes_equal_bitmasks_boxes(density):
    g = torch.Generator().manual_seed(int(density * 1000))
    masks = torch.rand(40, 23, 31, generator=g) < density
    masks[0] = False
    want = BitMasks(masks).get_bounding_boxes().tensor
    assert torch.equal(mask_boxes(masks), want)
    # a view that is not contiguous (e.g. masks of some queries of a larger tensor)
    assert torch.equal(mask_boxes(masks[::3]), want[::3])


def test_both_postprocessors_give_the_masks_boxes():
    g = torch.Generator().manual_seed(0)
    num_classes, queries = 5, 8
    mask_cls = torch.randn(queries, num_classes + 1, generator=g)
    mask_pred = 4 * torch.randn(queries, 12, 16, generator=g)
    mask_pred[2] = -10.0  # a query whose mask is empty at every size
    mask_cls[2, 0] += 9.0  # and selected
    settings = InferenceSettings(False, False, True, 0.3, 0.2, 12)
    args = (mask_cls, mask_pred, (48, 64), (44, 60), (50, 70))
    results = [p(settings)(*args)["instances"] for p in (PlainPostProcessor, BlockwisePostProcessor)]
    for instances in results:
        boxes = instances.pred_boxes.tensor
        assert torch.equal(boxes, BitMasks(instances.pred_masks > 0.5).get_bounding_boxes().tensor)
        assert (boxes == 0).all(1).any() and (boxes[:, 2:] > boxes[:, :2]).all(1).any()
    assert torch.equal(results[0].pred_boxes.tensor, results[1].pred_boxes.tensor)


# ---------------------------------------------------------------- box AP in the evaluation
IMAGE_H, IMAGE_W = 40, 48
_PREFIX = "_test_instance_boxes_"


def _rect(y0, x0, y1, x1):
    mask = torch.zeros(IMAGE_H, IMAGE_W, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _disk(cy, cx, r):
    yy, xx = torch.meshgrid(torch.arange(IMAGE_H), torch.arange(IMAGE_W), indexing="ij")
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _frame(y0, x0, y1, x1, width=2):
    """The border of a rectangle: the rectangle's box, a fraction of its area."""
    return _rect(y0, x0, y1, x1) & ~_rect(y0 + width, x0 + width, y1 - width, x1 - width)


# per image: ground truth [(dataset category id, mask)], predictions [(category, mask, score)]
GROUND_TRUTH = {
    1: [(3, _rect(2, 2, 20, 20)), (7, _disk(28, 34, 8))],
    2: [(7, _rect(5, 10, 30, 40)), (3, _disk(10, 8, 5))],
}
PREDICTIONS = {
    # the frame: a perfect box, a poor mask
    1: [(3, _frame(2, 2, 20, 20), 0.9), (7, _disk(28, 33, 6), 0.8), (7, _rect(0, 30, 10, 47), 0.6)],
    2: [(7, _rect(6, 12, 30, 38), 0.95), (3, _disk(11, 10, 5), 0.7), (3, _rect(30, 0, 40, 10), 0.5)],
}


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _coco_json(path):
    images, annotations = [], []
    for image_id, objects in GROUND_TRUTH.items():
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": IMAGE_H, "width": IMAGE_W})
        for category, mask in objects:
            rle = _rle(mask)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                "segmentation": rle, "area": float(mask_util.area(rle)),
                "bbox": [float(v) for v in mask_util.toBbox(rle)], "iscrowd": 0,
            })
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def _register(name, **metadata):
    name = _PREFIX + name
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(**metadata)
    return name


def _pycocotools_ap(gt_json, task):
    """pycocotools' AP of the predictions, their boxes computed by pycocotools from the masks."""
    from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
    from pycocotools.coco import COCO

    results = []
    for image_id, objects in PREDICTIONS.items():
        for category, mask, score in objects:
            rle = _rle(mask)
            results.append({"image_id": image_id, "category_id": category, "score": score,
                            "segmentation": rle, "bbox": [float(v) for v in mask_util.toBbox(rle)]})
    return _evaluate_predictions_on_coco(COCO(gt_json), results, task).stats[0] * 100


@pytest.mark.parametrize(
    "evaluator_type, instance_on, contiguous, classes, evaluator_class",
    [
        ("coco", False, {3: 0, 7: 1}, ["cat", "dog"], COCOEvaluator),
        # panoptic-style ids: things {1, 4} among stuff classes
        ("ade20k_panoptic_seg", True, {3: 1, 7: 4}, ["wall", "cat", "sky", "floor", "dog"], InstanceSegEvaluator),
    ],
)
def test_evaluation_reports_box_ap_beside_mask_ap(
    tmp_path, evaluator_type, instance_on, contiguous, classes, evaluator_class
):
    gt_json = str(tmp_path / "instances.json")
    _coco_json(gt_json)
    name = _register(
        evaluator_type, json_file=gt_json, evaluator_type=evaluator_type,
        thing_dataset_id_to_contiguous_id=contiguous, thing_classes=classes,
    )
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = instance_on
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = False
    (evaluator,) = build_evaluator(cfg, name)._evaluators
    assert type(evaluator) is evaluator_class

    evaluator.reset()
    for image_id, objects in PREDICTIONS.items():
        # the model's instances: boxes from the post-processing's own computation
        instances = instances_from_query_masks(
            torch.tensor([s for _, _, s in objects]),
            torch.tensor([contiguous[c] for c, _, _ in objects]),
            torch.stack([m for _, m, _ in objects]),
            torch.ones(len(objects), IMAGE_H, IMAGE_W),  # mask score 1: scores stay as given
            torch.arange(len(objects)),
        )
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    results = evaluator.evaluate()

    assert set(results) == {"bbox", "segm"}
    assert 0 < results["bbox"]["AP"] < 100 and 0 < results["segm"]["AP"] < 100
    assert results["bbox"]["AP"] > results["segm"]["AP"] + 10  # boxes, not masks, were compared
    assert results["bbox"]["AP"] == pytest.approx(_pycocotools_ap(gt_json, "bbox"), abs=1e-6)
    assert results["segm"]["AP"] == pytest.approx(_pycocotools_ap(gt_json, "segm"), abs=1e-6)
