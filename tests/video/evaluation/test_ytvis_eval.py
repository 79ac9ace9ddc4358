"""YTVISEvaluator: track AP/AR against a direct computation on hand-made tracks, and results.json."""
import json
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former_video.data_video.ytvis_eval import (
    YTVISEvaluator,
    instances_to_coco_json_video,
    track_ious,
)

H, W, T = 8, 10, 3
CLASSES = ["cat", "dog"]
DATASET_IDS = [3, 7]  # contiguous 0, 1
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)

# a track: T masks, None where the object is absent
Track = List[Optional[np.ndarray]]


def box(y0, x0, y1, x1, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def empty(h=H, w=W) -> np.ndarray:
    return np.zeros((h, w), dtype=bool)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _register(tmp_path, gts: Dict[int, List[Tuple[int, Track]]], h=H, w=W, t=T) -> str:
    """A YouTube-VIS json of ``gts`` ({video id: [(contiguous class, track)]}), registered."""
    videos = [
        {"id": vid, "height": h, "width": w, "length": t,
         "file_names": [f"v{vid}/{i:05d}.jpg" for i in range(t)]}
        for vid in gts
    ]
    annotations = [
        {"id": len(videos) * 100 + k, "video_id": vid, "category_id": DATASET_IDS[cls], "iscrowd": 0,
         "segmentations": [None if m is None else _rle(m) for m in track]}
        for vid, objects in gts.items()
        for k, (cls, track) in enumerate(objects)
    ]
    categories = [{"id": i, "name": n} for i, n in zip(DATASET_IDS, CLASSES)]
    json_file = tmp_path / "valid.json"
    json_file.write_text(json.dumps({"videos": videos, "annotations": annotations, "categories": categories}))
    name = f"_test_ytvis_eval_{tmp_path.name}"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        json_file=str(json_file), thing_classes=CLASSES, evaluator_type="ytvis",
        thing_dataset_id_to_contiguous_id=dict(zip(DATASET_IDS, range(len(CLASSES)))),
    )
    return name


def _evaluate(tmp_path, gts, preds: Dict[int, List[Tuple[int, Track, float]]], use_fast_impl=True, **shape):
    """``preds``: {video id: [(contiguous class, track (None = empty mask), score)]}."""
    name = _register(tmp_path, gts, **shape)
    evaluator = YTVISEvaluator(name, distributed=False, output_dir=str(tmp_path), use_fast_impl=use_fast_impl)
    evaluator.reset()
    for vid, objects in preds.items():
        t = len(objects[0][1]) if objects else T
        output = {
            "pred_scores": [s for _, _, s in objects],
            "pred_labels": [c for c, _, _ in objects],
            "pred_masks": [
                torch.from_numpy(np.stack(_fill(track)))
                for _, track, _ in objects
            ],
        }
        evaluator.process([{"video_id": vid, "length": t}], [output])
    return evaluator.evaluate()["segm"]


def _fill(track: Track) -> Track:
    shape = next(m.shape for m in track if m is not None)
    return [np.zeros(shape, bool) if m is None else m for m in track]


# ------------------------------------------------------------------ the direct computation
def direct_track_iou(d: Track, g: Track) -> float:
    inter = union = 0
    for dm, gm in zip(d, g):
        dm = np.zeros((1,), bool) if dm is None else dm
        gm = np.zeros((1,), bool) if gm is None else gm
        inter += int(np.logical_and(dm, gm).sum())
        union += int(np.logical_or(dm, gm).sum())
    return inter / union if union else 0.0


def direct_ap(gts, preds, iou_thresholds=IOU_THRESHOLDS) -> float:
    """COCO AP (101 recall points, greedy matching by score), averaged over IoU thresholds and
    the categories with ground truth, written out directly."""
    per_category = []
    for cls in sorted({c for objs in gts.values() for c, _ in objs}):
        num_gt = sum(c == cls for objs in gts.values() for c, _ in objs)
        dets = sorted(
            ((s, vid, tr) for vid, objs in preds.items() for c, tr, s in objs if c == cls),
            key=lambda x: -x[0],
        )
        aps = []
        for thr in iou_thresholds:
            used = set()
            tps = []
            for _, vid, tr in dets:
                best, best_iou = None, thr - 1e-12
                for k, (c, g) in enumerate(gts.get(vid, [])):
                    iou = direct_track_iou(tr, g)
                    if c == cls and (vid, k) not in used and iou >= best_iou:
                        best, best_iou = k, iou
                if best is not None:
                    used.add((vid, best))
                tps.append(best is not None)
            tp = np.cumsum(tps)
            recall = tp / num_gt
            precision = tp / np.arange(1, len(tps) + 1)
            # precision made monotone, read at recall 0, 0.01, ..., 1
            precision = np.maximum.accumulate(precision[::-1])[::-1] if len(tps) else precision
            points = [precision[np.searchsorted(recall, r)] if (recall >= r).any() else 0.0
                      for r in np.linspace(0, 1, 101)]
            aps.append(np.mean(points))
        per_category.append(np.mean(aps))
    return float(np.mean(per_category) * 100)


# ------------------------------------------------------------------ cases
A = box(0, 0, 4, 4)  # 16 px
B = box(4, 4, 8, 8)  # 16 px
A_HALF = box(0, 2, 4, 6)  # 8 px of A: IoU 8 / 24 = 1/3
A_WIDE = box(0, 0, 4, 8)  # 32 px, contains A: IoU 1/2


@pytest.mark.parametrize("use_fast_impl", [True, False])
def test_perfect_prediction(tmp_path, use_fast_impl):
    gts = {1: [(0, [A, A, B])], 2: [(1, [B, B, B])]}
    preds = {1: [(0, [A, A, B], 0.9)], 2: [(1, [B, B, B], 0.8)]}
    res = _evaluate(tmp_path, gts, preds, use_fast_impl=use_fast_impl)
    for key in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AP-cat", "AP-dog"):
        assert res[key] == pytest.approx(100.0), key
    # every track is small (mean area 16 < 128^2)
    assert math.isnan(res["APm"]) and math.isnan(res["APl"])


def test_half_overlapping_track_matches_at_iou_050_only(tmp_path):
    gts = {1: [(0, [A, A, A])]}
    preds = {1: [(0, [A_WIDE, A_WIDE, A_WIDE], 0.9)]}
    assert direct_track_iou(preds[1][0][1], gts[1][0][1]) == 0.5
    res = _evaluate(tmp_path, gts, preds)
    assert res["AP50"] == pytest.approx(100.0)
    assert res["AP75"] == pytest.approx(0.0)
    assert res["AP"] == pytest.approx(10.0) == pytest.approx(direct_ap(gts, preds))


@pytest.mark.parametrize("use_fast_impl", [True, False])
def test_false_positive_ranked_above_true_positive(tmp_path, use_fast_impl):
    gts = {1: [(0, [A, A, A])]}
    preds = {1: [(0, [B, B, B], 0.9), (0, [A, A, A], 0.5)]}
    res = _evaluate(tmp_path, gts, preds, use_fast_impl=use_fast_impl)
    assert res["AP"] == pytest.approx(50.0) == pytest.approx(direct_ap(gts, preds))
    assert res["AR1"] == pytest.approx(0.0)  # the one best-scored track is the false positive
    assert res["AR10"] == pytest.approx(100.0)


def test_absent_frames(tmp_path):
    # the object is absent from frame 1; the prediction there adds its 16 px to the union only
    gts = {1: [(0, [A, None, A])], 2: [(0, [None, B, B])]}
    preds = {1: [(0, [A, B, A], 0.9)], 2: [(0, [None, B, B], 0.8)]}
    tracks = [tr for _, tr, _ in preds[1]], [tr for _, tr in gts[1]]
    assert direct_track_iou(tracks[0][0], tracks[1][0]) == pytest.approx(32 / 48)
    # where both are absent, the frame adds nothing: video 2's track IoU is 1
    rles = lambda tr: [None if m is None else _rle(m) for m in tr]  # noqa: E731
    ious = track_ious([rles(preds[2][0][1])], [rles(gts[2][0][1])])
    assert ious.shape == (1, 1) and ious[0, 0] == 1.0
    res = _evaluate(tmp_path, gts, preds)
    # IoU 2/3 passes thresholds 0.50..0.65: AP over both tracks equals the direct computation
    assert res["AP"] == pytest.approx(direct_ap(gts, preds))
    assert res["AP50"] == pytest.approx(100.0)
    assert res["AP75"] < 100.0


def test_two_categories_and_several_videos(tmp_path):
    gts = {
        1: [(0, [A, A, A]), (1, [B, B, None])],
        2: [(0, [None, A, A])],
        3: [(1, [B, B, B]), (1, [A, A, A])],
    }
    preds = {
        1: [(0, [A, A_HALF, A], 0.95), (1, [B, B, B], 0.6), (0, [B, B, B], 0.7)],
        2: [(0, [A_WIDE, A, A], 0.8), (1, [A, A, A], 0.3)],
        3: [(1, [B, B, B], 0.9), (1, [A_HALF, A, A], 0.4), (0, [A, A, A], 0.2)],
    }
    res = _evaluate(tmp_path, gts, preds)
    assert res["AP"] == pytest.approx(direct_ap(gts, preds), abs=1e-6)
    for cls, name in enumerate(CLASSES):
        only = lambda d: {v: [o for o in objs if o[0] == cls] for v, objs in d.items()}  # noqa: E731
        assert res[f"AP-{name}"] == pytest.approx(direct_ap(only(gts), only(preds)), abs=1e-6)
    assert res["AP50"] == pytest.approx(direct_ap(gts, preds, [0.5]), abs=1e-6)
    assert res["AP75"] == pytest.approx(direct_ap(gts, preds, [0.75]), abs=1e-6)


def test_fast_and_plain_implementations_agree(tmp_path):
    gts = {1: [(0, [A, A, A]), (1, [B, None, B])], 2: [(1, [A, B, A])]}
    preds = {1: [(0, [A_HALF, A, A], 0.9), (1, [B, B, B], 0.8)], 2: [(1, [A, B, None], 0.7), (0, [A, A, A], 0.6)]}
    fast = _evaluate(tmp_path, gts, preds, use_fast_impl=True)
    plain = _evaluate(tmp_path, gts, preds, use_fast_impl=False)
    assert fast.keys() == plain.keys()
    for key in fast:
        assert fast[key] == pytest.approx(plain[key], nan_ok=True), key


def test_area_range_uses_the_mean_over_present_frames(tmp_path):
    # 160 x 160 = 25600 px in the one frame where it is present: medium (128^2 .. 256^2);
    # a mean over both frames (12800) would make it small
    h = w = 160
    full = np.ones((h, w), bool)
    gts = {1: [(0, [full, None])]}
    preds = {1: [(0, [full, None], 0.9)]}
    res = _evaluate(tmp_path, gts, preds, h=h, w=w, t=2)
    assert res["APm"] == pytest.approx(100.0)
    assert math.isnan(res["APs"]) and math.isnan(res["APl"])


def test_results_json_is_the_server_format(tmp_path):
    gts = {5: [(1, [A, B, None])]}
    preds = {5: [(1, [A, B, None], 0.75), (0, [B, B, B], 0.25)]}
    _evaluate(tmp_path, gts, preds)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["video_id"], r["category_id"], r["score"]) for r in results] == [(5, 7, 0.75), (5, 3, 0.25)]
    assert set(results[0]) == {"video_id", "score", "category_id", "segmentations"}
    decoded = [mask_util.decode({"size": s["size"], "counts": s["counts"].encode()}) for s in results[0]["segmentations"]]
    np.testing.assert_array_equal(np.stack(decoded), np.stack([A, B, empty()]).astype(np.uint8))


def test_instances_to_coco_json_video_and_bad_input():
    masks = torch.from_numpy(np.stack([A, B]))
    out = instances_to_coco_json_video(
        [{"video_id": 9, "length": 2}], {"pred_scores": [0.5], "pred_labels": [1], "pred_masks": [masks]}
    )
    assert len(out) == 1 and out[0]["video_id"] == 9 and out[0]["category_id"] == 1
    assert [mask_util.area(s) for s in out[0]["segmentations"]] == [16, 16]
    with pytest.raises(ValueError, match="video 9: a predicted mask has 2 frames, the video has 3"):
        instances_to_coco_json_video(
            [{"video_id": 9, "length": 3}], {"pred_scores": [0.5], "pred_labels": [1], "pred_masks": [masks]}
        )


def test_segmentation_count_differing_from_frames_is_named(tmp_path):
    name = _register(tmp_path, {1: [(0, [A, A, A])]})
    json_file = MetadataCatalog.get(name).json_file
    data = json.load(open(json_file))
    data["annotations"][0]["segmentations"].pop()
    json.dump(data, open(json_file, "w"))
    evaluator = YTVISEvaluator(name, distributed=False)
    evaluator.reset()
    with pytest.raises(ValueError, match=r"valid.json: annotation .*: 2 segmentations for the 3 frames"):
        evaluator.evaluate()
