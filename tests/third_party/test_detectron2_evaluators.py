"""detectron2's own evaluators give the numbers of pycocotools / panopticapi / numpy run
directly: third-party behaviour that build_evaluator (tests/evaluation/) relies on when it picks
them."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from panopticapi.evaluation import pq_compute
from panopticapi.utils import id2rgb

from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator

from evaluation_cases import (
    H,
    W,
    disk,
    pycocotools_segm_stats,
    rect,
    register,
    run_instance_evaluator,
    write_instance_case,
)


@pytest.fixture(scope="module")
def instance_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("instance")
    return (*write_instance_case(tmp), tmp)


@pytest.mark.parametrize("fast", [True, False])
def test_coco_evaluator_segm_ap_equals_pycocotools(instance_case, fast):
    _, preds, gt_json, tmp = instance_case
    id_map = {3: 0, 7: 1}
    name = register(
        "coco_inst",
        json_file=gt_json,
        thing_dataset_id_to_contiguous_id=id_map,
        thing_classes=["cat", "dog"],
        evaluator_type="coco",
    )
    evaluator = COCOEvaluator(
        name, tasks=("segm",), distributed=False, output_dir=str(tmp / "out"), use_fast_impl=fast
    )
    res = run_instance_evaluator(evaluator, preds, id_map)["segm"]
    expected = pycocotools_segm_stats(gt_json, preds)
    assert 0 < expected[0] < 100  # a non-trivial case
    for i, key in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        if expected[i] < 0:
            assert np.isnan(res[key])
        else:
            assert res[key] == pytest.approx(expected[i], abs=1e-6), key


# ---------------------------------------------------------------- panoptic segmentation (PQ)
# categories: things 1 ("person"), 2 ("car"); stuff 10 ("sky"), 11 ("road")
_PAN_CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 10, "name": "sky", "isthing": 0},
    {"id": 11, "name": "road", "isthing": 0},
]
_THING_MAP = {1: 0, 2: 1}
_STUFF_MAP = {10: 2, 11: 3}


def _panoptic_case():
    """Per image: list of (dataset category id, mask), painted in order; 0 stays void."""
    sky, road = rect(0, 0, 15, W), rect(28, 0, H, W)
    gts = {
        5: [(10, sky), (11, road), (1, rect(16, 2, 27, 12)), (2, rect(16, 20, 27, 40))],
        6: [(10, rect(0, 0, 20, W)), (1, disk(30, 10, 6)), (1, disk(30, 36, 6))],
    }
    preds = {
        5: [
            (10, rect(0, 0, 17, W)),  # sky, slightly too big
            (11, rect(30, 0, H, W)),  # road, smaller
            (1, rect(16, 3, 27, 12)),  # good person
            (2, rect(16, 20, 22, 30)),  # bad car (IoU < 0.5)
            (1, rect(16, 42, 27, 47)),  # false-positive person
        ],
        6: [
            (11, rect(0, 0, 20, W)),  # wrong stuff class
            (1, disk(30, 10, 6)),  # exact
            (2, disk(30, 36, 6)),  # right mask, wrong class
        ],
    }
    return gts, preds


def _paint(objs):
    ids = np.zeros((H, W), dtype=np.int32)
    segments = []
    for k, (cat, mask) in enumerate(objs, start=1):
        ids[mask] = k
    for k, (cat, _) in enumerate(objs, start=1):
        if (ids == k).any():
            segments.append({"id": k, "category_id": cat})
    return ids, segments


@pytest.fixture(scope="module")
def panoptic_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("panoptic")
    gts, preds = _panoptic_case()
    gt_dir = tmp / "gt"
    gt_dir.mkdir()
    images, annotations = [], []
    for image_id, objs in gts.items():
        ids, segments = _paint(objs)
        Image.fromarray(id2rgb(ids)).save(gt_dir / f"{image_id}.png")
        for s in segments:
            mask = ids == s["id"]
            s.update(iscrowd=0, area=int(mask.sum()), bbox=[0, 0, 1, 1])
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": H, "width": W})
        annotations.append(
            {"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments}
        )
    gt_json = str(tmp / "panoptic.json")
    with open(gt_json, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": _PAN_CATEGORIES}, f)
    return gts, preds, gt_json, str(gt_dir), tmp


def _panoptic_direct(gt_json, gt_dir, preds, tmp):
    pred_dir = tmp / "direct_pred"
    pred_dir.mkdir(exist_ok=True)
    annotations = []
    for image_id, objs in preds.items():
        ids, segments = _paint(objs)
        Image.fromarray(id2rgb(ids)).save(pred_dir / f"{image_id}.png")
        annotations.append(
            {"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments}
        )
    pred_json = str(tmp / "direct_pred.json")
    with open(pred_json, "w") as f:
        json.dump({"annotations": annotations}, f)
    with contextlib.redirect_stdout(io.StringIO()):
        return pq_compute(gt_json, pred_json, gt_folder=gt_dir, pred_folder=str(pred_dir))


def test_coco_panoptic_evaluator_pq_equals_panopticapi(panoptic_case):
    gts, preds, gt_json, gt_dir, tmp = panoptic_case
    name = register(
        "pan",
        panoptic_json=gt_json,
        panoptic_root=gt_dir,
        thing_dataset_id_to_contiguous_id=_THING_MAP,
        stuff_dataset_id_to_contiguous_id=_STUFF_MAP,
        evaluator_type="coco_panoptic_seg",
    )
    evaluator = COCOPanopticEvaluator(name, str(tmp / "eval_out"))
    evaluator.reset()
    for image_id, objs in preds.items():
        ids, segments = _paint(objs)
        # the model's format: contiguous category ids plus an "isthing" flag
        for s in segments:
            isthing = s["category_id"] in _THING_MAP
            s["isthing"] = isthing
            s["category_id"] = (_THING_MAP if isthing else _STUFF_MAP)[s["category_id"]]
        evaluator.process(
            [{"image_id": image_id, "file_name": f"/some/dir/{image_id}.jpg"}],
            [{"panoptic_seg": (torch.from_numpy(ids), segments)}],
        )
    res = evaluator.evaluate()["panoptic_seg"]
    expected = _panoptic_direct(gt_json, gt_dir, preds, tmp)
    assert 0 < expected["All"]["pq"] < 1
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for metric in ("pq", "sq", "rq"):
            key = metric.upper() + suffix
            assert res[key] == pytest.approx(100 * expected[group][metric], abs=1e-9), key


# ---------------------------------------------------------------- semantic segmentation (mIoU)
def _numpy_miou(gts, preds, num_classes, ignore_label):
    ious = []
    for c in range(num_classes):
        inter = union = gt_count = 0
        for gt, pred in zip(gts, preds):
            valid = gt != ignore_label
            g, p = (gt == c) & valid, (pred == c) & valid
            inter += np.logical_and(g, p).sum()
            union += np.logical_or(g, p).sum()
            gt_count += g.sum()
        if gt_count > 0:  # classes absent from the ground truth are not averaged
            ious.append(inter / union)
    return 100 * float(np.mean(ious))


def test_sem_seg_evaluator_miou_equals_numpy(tmp_path):
    rng = np.random.default_rng(0)
    num_classes, ignore = 4, 255
    dicts, gts, preds = [], [], []
    for i in range(3):
        gt = np.zeros((H, W), dtype=np.uint8)
        gt[:, W // 2 :] = 1
        gt[H // 2 :, :] = 2
        if i == 1:
            gt[:5, :5] = 3
        gt[rng.random((H, W)) < 0.05] = ignore
        pred = gt.copy()
        flip = rng.random((H, W)) < 0.2
        pred[flip] = rng.integers(0, num_classes, size=int(flip.sum()))
        pred[pred == ignore] = rng.integers(0, num_classes)
        path = tmp_path / f"gt{i}.png"
        Image.fromarray(gt).save(path)
        dicts.append({"file_name": f"img{i}.jpg", "sem_seg_file_name": str(path)})
        gts.append(gt.astype(np.int64))
        preds.append(pred.astype(np.int64))
    name = register(
        "sem",
        dicts,
        stuff_classes=["a", "b", "c", "d"],
        ignore_label=ignore,
        evaluator_type="sem_seg",
    )
    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.reset()
    for d, pred in zip(dicts, preds):
        scores = torch.nn.functional.one_hot(torch.from_numpy(pred), num_classes)
        evaluator.process([d], [{"sem_seg": scores.permute(2, 0, 1).float()}])
    res = evaluator.evaluate()["sem_seg"]
    expected = _numpy_miou(gts, preds, num_classes, ignore)
    assert 0 < expected < 100
    assert res["mIoU"] == pytest.approx(expected, abs=1e-9)


