"""Evaluators give the numbers of pycocotools / panopticapi / numpy run directly."""

import contextlib
import io
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image
from panopticapi.evaluation import pq_compute
from panopticapi.utils import id2rgb
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    SemSegEvaluator,
)
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.structures import Boxes, Instances

from mask2former.config import add_maskformer2_config
from mask2former.evaluation import InstanceSegEvaluator, build_evaluator

H, W = 40, 48
_PREFIX = "_test_evaluation_"


def _register(name, dicts=(), **metadata):
    name = _PREFIX + name
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    dicts = list(dicts)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(**metadata)
    return name


def _rect(y0, x0, y1, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _disk(cy, cx, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


# ---------------------------------------------------------------- instance segmentation (AP)
# per image: (dataset category id, gt mask); predictions: (dataset category id, mask, score)
def _instance_case():
    gts = {
        1: [(3, _rect(2, 2, 20, 20)), (7, _disk(28, 34, 8)), (3, _rect(25, 2, 38, 14))],
        2: [(7, _rect(5, 10, 30, 40)), (3, _disk(10, 8, 5))],
        3: [(3, _rect(0, 0, 12, 47))],
    }
    preds = {
        1: [
            (3, _rect(3, 2, 20, 21), 0.9),  # good match
            (7, _disk(28, 33, 7), 0.8),  # good match
            (3, _rect(25, 2, 33, 10), 0.3),  # poor overlap
            (7, _rect(0, 30, 10, 47), 0.6),  # false positive
        ],
        2: [
            (7, _rect(6, 12, 30, 38), 0.95),
            (3, _disk(10, 9, 5), 0.4),
            (3, _rect(30, 0, 40, 10), 0.5),  # false positive
        ],
        3: [(7, _rect(0, 0, 12, 47), 0.7), (3, _rect(1, 1, 12, 40), 0.65)],  # wrong class first
    }
    return gts, preds


def _write_coco_gt(path, gts, categories):
    images, annotations = [], []
    for image_id, objs in gts.items():
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": H, "width": W})
        for cat, mask in objs:
            rle = _rle(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "segmentation": rle,
                    "area": float(mask_util.area(rle)),
                    "bbox": [float(v) for v in mask_util.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    cats = [{"id": cid, "name": name} for cid, name in categories.items()]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": cats}, f)


def _pycocotools_segm_stats(gt_json, preds):
    results = [
        {"image_id": image_id, "category_id": cat, "segmentation": _rle(mask), "score": score}
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


def _run_instance_evaluator(evaluator, preds, dataset_to_contiguous):
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


@pytest.fixture(scope="module")
def instance_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("instance")
    gts, preds = _instance_case()
    gt_json = str(tmp / "instances.json")
    _write_coco_gt(gt_json, gts, {3: "cat", 7: "dog"})
    return gts, preds, gt_json, tmp


@pytest.mark.parametrize("fast", [True, False])
def test_coco_evaluator_segm_ap_equals_pycocotools(instance_case, fast):
    _, preds, gt_json, tmp = instance_case
    id_map = {3: 0, 7: 1}
    name = _register(
        "coco_inst",
        json_file=gt_json,
        thing_dataset_id_to_contiguous_id=id_map,
        thing_classes=["cat", "dog"],
        evaluator_type="coco",
    )
    evaluator = COCOEvaluator(
        name, tasks=("segm",), distributed=False, output_dir=str(tmp / "out"), use_fast_impl=fast
    )
    res = _run_instance_evaluator(evaluator, preds, id_map)["segm"]
    expected = _pycocotools_segm_stats(gt_json, preds)
    assert 0 < expected[0] < 100  # a non-trivial case
    for i, key in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        if expected[i] < 0:
            assert np.isnan(res[key])
        else:
            assert res[key] == pytest.approx(expected[i], abs=1e-6), key


def test_instance_seg_evaluator_with_gapped_thing_ids(instance_case):
    # panoptic-style id space: contiguous ids cover stuff too, so things are {1, 4}
    _, preds, gt_json, tmp = instance_case
    id_map = {3: 1, 7: 4}
    name = _register(
        "ade_inst",
        json_file=gt_json,
        thing_dataset_id_to_contiguous_id=id_map,
        thing_classes=["wall", "cat", "sky", "floor", "dog"],
        evaluator_type="ade20k_panoptic_seg",
    )
    evaluator = InstanceSegEvaluator(name, tasks=("segm",), output_dir=str(tmp / "ade_out"))
    res = _run_instance_evaluator(evaluator, preds, id_map)["segm"]
    expected = _pycocotools_segm_stats(gt_json, preds)
    assert res["AP"] == pytest.approx(expected[0], abs=1e-6)
    assert res["AP50"] == pytest.approx(expected[1], abs=1e-6)
    # per-category AP named from the gt json's categories
    assert "AP-cat" in res and "AP-dog" in res
    # detectron2's own COCOEvaluator refuses this id space
    with pytest.raises(AssertionError):
        _run_instance_evaluator(
            COCOEvaluator(name, tasks=("segm",), output_dir=str(tmp / "ade_out2")), preds, id_map
        )


def test_instance_seg_evaluator_rejects_stuff_class(instance_case):
    _, _, gt_json, tmp = instance_case
    name = _register(
        "ade_inst_bad", json_file=gt_json, thing_dataset_id_to_contiguous_id={3: 1, 7: 4}
    )
    evaluator = InstanceSegEvaluator(name, tasks=("segm",), output_dir=str(tmp / "bad_out"))
    with pytest.raises(ValueError, match="class 2"):
        _run_instance_evaluator(evaluator, {1: [(0, _rect(0, 0, 5, 5), 0.5)]}, {0: 2})


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
    sky, road = _rect(0, 0, 15, W), _rect(28, 0, H, W)
    gts = {
        5: [(10, sky), (11, road), (1, _rect(16, 2, 27, 12)), (2, _rect(16, 20, 27, 40))],
        6: [(10, _rect(0, 0, 20, W)), (1, _disk(30, 10, 6)), (1, _disk(30, 36, 6))],
    }
    preds = {
        5: [
            (10, _rect(0, 0, 17, W)),  # sky, slightly too big
            (11, _rect(30, 0, H, W)),  # road, smaller
            (1, _rect(16, 3, 27, 12)),  # good person
            (2, _rect(16, 20, 22, 30)),  # bad car (IoU < 0.5)
            (1, _rect(16, 42, 27, 47)),  # false-positive person
        ],
        6: [
            (11, _rect(0, 0, 20, W)),  # wrong stuff class
            (1, _disk(30, 10, 6)),  # exact
            (2, _disk(30, 36, 6)),  # right mask, wrong class
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
    name = _register(
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
    name = _register(
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


# ---------------------------------------------------------------- build_evaluator
def _cfg(semantic=False, instance=False, panoptic=False, output_dir="."):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.OUTPUT_DIR = output_dir
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = semantic
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = instance
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = panoptic
    return cfg


def _types(evaluators):
    return [type(e) for e in evaluators._evaluators]


@pytest.fixture(scope="module")
def typed_datasets(instance_case):
    _, _, gt_json, _ = instance_case
    common = dict(
        json_file=gt_json,
        panoptic_json="unused.json",
        panoptic_root="unused",
        thing_dataset_id_to_contiguous_id={3: 1, 7: 4},
        stuff_dataset_id_to_contiguous_id={1: 0, 3: 1, 5: 2, 6: 3, 7: 4},
        stuff_classes=list("abcde"),
        ignore_label=255,
    )
    dicts = [{"file_name": "a.jpg", "sem_seg_file_name": "a.png"}]
    names = {}
    for t in (
        "sem_seg",
        "coco",
        "coco_panoptic_seg",
        "ade20k_panoptic_seg",
        "mapillary_vistas_panoptic_seg",
        "cityscapes_panoptic_seg",
        "cityscapes_sem_seg",
        "cityscapes_instance",
        "something_else",
    ):
        names[t] = _register("typed_" + t, dicts, evaluator_type=t, **common)
    return names


@pytest.mark.parametrize(
    "evaluator_type, flags, expected",
    [
        ("sem_seg", {}, [SemSegEvaluator]),
        ("coco", {}, [COCOEvaluator]),
        (
            "coco_panoptic_seg",
            dict(semantic=True, instance=True, panoptic=True),
            [SemSegEvaluator, COCOPanopticEvaluator, COCOEvaluator],
        ),
        ("coco_panoptic_seg", dict(panoptic=True), [COCOPanopticEvaluator]),
        (
            "ade20k_panoptic_seg",
            dict(semantic=True, instance=True, panoptic=True),
            [SemSegEvaluator, COCOPanopticEvaluator, InstanceSegEvaluator],
        ),
        ("mapillary_vistas_panoptic_seg", dict(instance=True), [InstanceSegEvaluator]),
        (
            "mapillary_vistas_panoptic_seg",
            dict(semantic=True, panoptic=True),
            [SemSegEvaluator, COCOPanopticEvaluator],
        ),
        (
            "cityscapes_panoptic_seg",
            dict(semantic=True, instance=True, panoptic=True),
            [COCOPanopticEvaluator, CityscapesSemSegEvaluator, CityscapesInstanceEvaluator],
        ),
        ("cityscapes_sem_seg", {}, [CityscapesSemSegEvaluator]),
        ("cityscapes_instance", {}, [CityscapesInstanceEvaluator]),
    ],
)
def test_build_evaluator_choice(typed_datasets, tmp_path, evaluator_type, flags, expected):
    cfg = _cfg(output_dir=str(tmp_path), **flags)
    evaluators = build_evaluator(cfg, typed_datasets[evaluator_type])
    assert _types(evaluators) == expected
    for e in evaluators._evaluators:
        if isinstance(e, COCOEvaluator):  # box AP (the masks' tight boxes) beside mask AP
            assert e._tasks == ("bbox", "segm")


def test_build_evaluator_default_output_folder(typed_datasets, tmp_path):
    cfg = _cfg(panoptic=True, output_dir=str(tmp_path))
    (pan,) = build_evaluator(cfg, typed_datasets["coco_panoptic_seg"])._evaluators
    assert pan._output_dir == os.path.join(str(tmp_path), "inference")


def test_build_evaluator_unknown_type_names_dataset(typed_datasets, tmp_path):
    name = typed_datasets["something_else"]
    with pytest.raises(NotImplementedError, match=f"{name}.*something_else"):
        build_evaluator(_cfg(output_dir=str(tmp_path)), name)
    # a known type whose outputs are all switched off gets the same clear error
    with pytest.raises(NotImplementedError, match="ade20k_panoptic_seg"):
        build_evaluator(_cfg(output_dir=str(tmp_path)), typed_datasets["ade20k_panoptic_seg"])
