"""
YouTube-VIS evaluation: track AP and AR, and the ``results.json`` of the YouTube-VIS server.

A track is a list of per-frame masks. The IoU of two tracks is the sum over frames of their
intersections divided by the sum over frames of their unions (a frame where both are absent
adds nothing). Each video plays the role of a COCO "image": the (D, G) track IoU matrix of a
(video, category) is computed here and fed to pycocotools' (or detectron2's fast) per-image
matching and accumulation, so AP, AP50, AP75 and AR1/AR10/AR100 are computed exactly as COCO's,
over IoU 0.50:0.95. As in YouTube-VIS, a track's area is its mean area over the frames where it
is present, and the small / medium / large ranges are split at 128^2 and 256^2 pixels.
"""
import contextlib
import copy
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

__all__ = ["YTVISEvaluator", "instances_to_coco_json_video", "track_ious"]

# YouTube-VIS's area ranges (all, small, medium, large), on a track's mean area
YTVIS_AREA_RANGES = [[0.0, 1e5**2], [0.0, 128.0**2], [128.0**2, 256.0**2], [256.0**2, 1e5**2]]
_SUMMARY_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"]


def _encode(mask) -> dict:
    """(H, W) bool mask → compressed RLE with a str "counts" (json-ready)."""
    mask = np.asarray(mask, dtype=np.uint8)
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def instances_to_coco_json_video(inputs: List[Dict], outputs: Dict) -> List[Dict]:
    """
    The predictions of one video in the YouTube-VIS results format.

    Args:
        inputs: the model's input, a list of one video dict (with "video_id" and "length").
        outputs: the model's output for that video: "pred_scores" (N floats), "pred_labels"
            (N contiguous ids), "pred_masks" (N bool tensors (T, H, W)).

    Returns:
        N dicts ``{"video_id", "score", "category_id", "segmentations"}``: one RLE per frame,
        and "category_id" the contiguous id (the evaluator maps it to the dataset's id).
    """
    if len(inputs) != 1:
        raise ValueError(f"instances_to_coco_json_video takes one video, got {len(inputs)}")
    video_id = inputs[0]["video_id"]
    length = inputs[0].get("length")
    results = []
    for score, label, masks in zip(
        outputs["pred_scores"], outputs["pred_labels"], outputs["pred_masks"]
    ):
        masks = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
        if length is not None and masks.shape[0] != length:
            raise ValueError(
                f"video {video_id}: a predicted mask has {masks.shape[0]} frames, "
                f"the video has {length}"
            )
        results.append(
            {
                "video_id": video_id,
                "score": float(score),
                "category_id": int(label),
                "segmentations": [_encode(m) for m in masks],
            }
        )
    return results


def _frame_areas(track: Sequence[Optional[dict]]) -> np.ndarray:
    return np.array([0 if rle is None else mask_util.area(rle) for rle in track], dtype=np.float64)


def track_ious(dt_tracks: Sequence[Sequence], gt_tracks: Sequence[Sequence]) -> np.ndarray:
    """
    Args:
        dt_tracks, gt_tracks: D and G tracks of one video, each a list of T compressed RLEs
            (None where the object is absent).

    Returns:
        (D, G) float array: sum_t |d_t & g_t| / sum_t |d_t | g_t| (0 where the union is empty).
    """
    if not dt_tracks or not gt_tracks:
        return np.zeros((len(dt_tracks), len(gt_tracks)))
    num_frames = len(gt_tracks[0])
    if any(len(t) != num_frames for t in itertools.chain(dt_tracks, gt_tracks)):
        raise ValueError(f"tracks of one video have different frame counts (expected {num_frames})")
    dt_areas = np.stack([_frame_areas(t) for t in dt_tracks])  # (D, T)
    gt_areas = np.stack([_frame_areas(t) for t in gt_tracks])  # (G, T)
    inter = np.zeros((len(dt_tracks), len(gt_tracks)))
    for t in range(num_frames):
        d_idx = [i for i, track in enumerate(dt_tracks) if track[t] is not None and dt_areas[i, t]]
        g_idx = [j for j, track in enumerate(gt_tracks) if track[t] is not None and gt_areas[j, t]]
        if not d_idx or not g_idx:
            continue
        iou = np.asarray(
            mask_util.iou(
                [dt_tracks[i][t] for i in d_idx], [gt_tracks[j][t] for j in g_idx], [0] * len(g_idx)
            )
        )
        # pycocotools gives IoU; the integer intersection is IoU * (a + b) / (1 + IoU)
        area_sum = dt_areas[d_idx, t][:, None] + gt_areas[g_idx, t][None, :]
        inter[np.ix_(d_idx, g_idx)] += np.round(iou * area_sum / (1.0 + iou))
    union = dt_areas.sum(1)[:, None] + gt_areas.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _mean_area(track: Sequence[Optional[dict]]) -> float:
    areas = _frame_areas(track)
    present = areas[areas > 0]
    return float(present.mean()) if len(present) else 0.0


class _TrackIoU:
    """COCOeval with videos as images, tracks as objects and the track IoU (a mixin)."""

    def __init__(self, coco_gt: COCO, coco_dt: COCO):
        super().__init__(coco_gt, coco_dt, iouType="segm")
        self.params.areaRng = copy.deepcopy(YTVIS_AREA_RANGES)

    def _prepare(self):
        # for "segm", COCOeval._prepare converts each object's "segmentation" to RLE; tracks
        # have per-frame "segmentations", which computeIoU below reads as they are
        self.params.iouType = "bbox"
        try:
            super()._prepare()
        finally:
            self.params.iouType = "segm"

    def computeIoU(self, imgId, catId):  # noqa: N802,N803  (COCOeval's names)
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if not gt or not dt:
            return []  # as pycocotools' mask IoU of an empty list
        # the order and cut of COCOeval.computeIoU, which the matching relies on
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: self.params.maxDets[-1]]
        return track_ious([d["segmentations"] for d in dt], [g["segmentations"] for g in gt])


class _TrackEval(_TrackIoU, COCOeval):
    pass


class _FastTrackEval(_TrackIoU, COCOeval_opt):
    pass


def _coco_of(videos: List[Dict], categories: List[Dict], tracks: List[Dict]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": videos, "categories": categories, "annotations": tracks}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _rle_of(segm, height: int, width: int, where: str) -> Optional[dict]:
    if segm is None:
        return None
    if isinstance(segm, list):  # polygons
        return mask_util.merge(mask_util.frPyObjects(segm, height, width))
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):  # uncompressed RLE
        return mask_util.frPyObjects(segm, height, width)
    if isinstance(segm, dict) and "counts" in segm:
        return segm
    raise ValueError(f"{where}: unknown segmentation format {type(segm).__name__}")


def load_ytvis_ground_truth(json_file: str) -> Dict[str, List[Dict]]:
    """
    The videos, categories and tracks of a YouTube-VIS json, as COCO "images" and
    "annotations": each track gets "segmentations" (compressed RLE or None per frame), its mean
    "area" and "image_id" = its video id.
    """
    with PathManager.open(json_file) as f:
        data = json.load(f)
    videos = {v["id"]: v for v in data["videos"]}
    tracks = []
    for i, ann in enumerate(data.get("annotations") or []):
        where = f"{json_file}: annotation {ann.get('id', i)}"
        video = videos.get(ann["video_id"])
        if video is None:
            raise ValueError(f"{where}: video_id {ann['video_id']} is not in 'videos'")
        segms = ann["segmentations"]
        if len(segms) != len(video["file_names"]):
            raise ValueError(
                f"{where}: {len(segms)} segmentations for the {len(video['file_names'])} "
                f"frames of video {video['id']}"
            )
        rles = [_rle_of(s, video["height"], video["width"], where) for s in segms]
        tracks.append(
            {
                "id": i + 1,
                "image_id": ann["video_id"],
                "category_id": ann["category_id"],
                "iscrowd": int(ann.get("iscrowd", 0)),
                "segmentations": rles,
                "area": _mean_area(rles),
            }
        )
    images = [{"id": v["id"], "height": v["height"], "width": v["width"]} for v in videos.values()]
    return {"images": images, "categories": data.get("categories", []), "annotations": tracks}


class YTVISEvaluator(DatasetEvaluator):
    """
    YouTube-VIS track AP/AR of a registered dataset (metadata "json_file" with the ground
    truth, "thing_dataset_id_to_contiguous_id", "thing_classes"). Predictions are gathered from
    every process; the main one evaluates and writes ``results.json`` to ``output_dir``.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks=None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        use_fast_impl: bool = True,
    ):
        """
        Args:
            dataset_name: a registered YouTube-VIS-format dataset.
            tasks: unused; "segm" is the only task (a config here is accepted, as the
                original's train_net_video.py passes one).
            distributed: gather the predictions of all processes before evaluating.
            output_dir: where ``results.json`` is written (nothing is written if None).
            use_fast_impl: detectron2's C++ matching and accumulation instead of pycocotools'
                (same numbers).
        """
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._use_fast_impl = use_fast_impl
        self._metadata = MetadataCatalog.get(dataset_name)
        json_file = getattr(self._metadata, "json_file", None)
        if not json_file:
            raise ValueError(
                f"YTVISEvaluator: dataset {dataset_name!r} has no 'json_file' in its metadata "
                "(the YouTube-VIS json with the ground truth)"
            )
        self._json_file = json_file
        id_map = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        self._contiguous_to_dataset_id = {v: k for k, v in (id_map or {}).items()}

    def reset(self):
        self._predictions: List[Dict] = []

    def process(self, inputs: List[Dict], outputs: List[Dict]):
        for video, output in zip(inputs, outputs):
            self._predictions.extend(instances_to_coco_json_video([video], output))

    def _to_dataset_ids(self, predictions: List[Dict]) -> None:
        if not self._contiguous_to_dataset_id:
            return
        for p in predictions:
            label = p["category_id"]
            if label not in self._contiguous_to_dataset_id:
                raise ValueError(
                    f"YTVISEvaluator: predicted label {label} is not a contiguous id of "
                    f"dataset {self._dataset_name!r} (0..{len(self._contiguous_to_dataset_id) - 1})"
                )
            p["category_id"] = self._contiguous_to_dataset_id[label]

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        self._to_dataset_ids(predictions)
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "results.json")
            with PathManager.open(path, "w") as f:
                json.dump(predictions, f)
            self._logger.info("YouTube-VIS results (server format) saved to %s", path)
        gt = load_ytvis_ground_truth(self._json_file)
        if not gt["annotations"]:
            self._logger.warning(
                "%s has no annotations (a server-evaluated split): only results.json is written",
                self._json_file,
            )
            return {}
        return {"segm": self._eval(gt, predictions)}

    def _eval(self, gt: Dict[str, List[Dict]], predictions: List[Dict]) -> Dict[str, float]:
        video_ids = sorted({p["video_id"] for p in predictions})
        tracks = [dict(p, id=i + 1, image_id=p["video_id"]) for i, p in enumerate(predictions)]
        for t in tracks:
            t["area"] = _mean_area(t["segmentations"])
        coco_gt = _coco_of(gt["images"], gt["categories"], gt["annotations"])
        coco_dt = _coco_of(gt["images"], gt["categories"], tracks)
        evaluator = (_FastTrackEval if self._use_fast_impl else _TrackEval)(coco_gt, coco_dt)
        # the processed videos: a dataset evaluated in part is not charged for the rest
        evaluator.params.imgIds = video_ids or sorted(coco_gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        with contextlib.redirect_stdout(io.StringIO()) as summary:
            evaluator.summarize()
        self._logger.info("Track AP/AR of %s:\n%s", self._dataset_name, summary.getvalue())
        results = OrderedDict(
            (name, float(s * 100) if s >= 0 else float("nan"))
            for name, s in zip(_SUMMARY_METRICS, evaluator.stats)
        )
        results.update(self._per_category_ap(evaluator, coco_gt))
        return results

    def _per_category_ap(self, evaluator: COCOeval, coco_gt: COCO) -> Dict[str, float]:
        """"AP-<class name>" of each category (named as in the json, else by its id)."""
        # precision: (IoU thresholds, recall points, categories, area ranges, max dets)
        precision = evaluator.eval["precision"]
        per_category = OrderedDict()
        for k, cat_id in enumerate(evaluator.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            name = coco_gt.cats[cat_id].get("name", str(cat_id))
            per_category[f"AP-{name}"] = float(p.mean() * 100) if p.size else float("nan")
        return per_category
