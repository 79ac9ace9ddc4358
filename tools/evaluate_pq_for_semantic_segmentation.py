#!/usr/bin/env python
r"""
Panoptic quality (PQ, SQ, RQ) of semantic segmentation predictions, every class scored as stuff:

    python tools/evaluate_pq_for_semantic_segmentation.py --dataset-name NAME \
        --json-file sem_seg_predictions.json [--per-class]

e.g. python tools/evaluate_pq_for_semantic_segmentation.py --dataset-name synthetic_sem_seg_val \
        --json-file output/synthetic_semantic/inference/sem_seg_predictions.json

The predictions are the file detectron2's SemSegEvaluator writes (a list of {"file_name",
"category_id", "segmentation": RLE}); the ground truth is the ``sem_seg_file_name`` of the
dataset's records, with the metadata's ``stuff_classes`` and ``ignore_label``. In each image, all
pixels of a class form one segment, in the ground truth and in the prediction. As in
panopticapi, a predicted and a ground-truth segment of the same class match when their IoU,
with the prediction's pixels on ignored ground truth left out of the union, exceeds 0.5; an
unmatched prediction is a false positive unless more than half of it lies on ignored pixels.
PQ, SQ and RQ are averaged over the classes that have a segment in either.
"""

import argparse
import json
import sys
from collections import defaultdict
from typing import Dict, List, Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
from panopticapi.evaluation import PQStat


from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.sem_seg_evaluation import load_image_into_numpy_array

import mask2former  # noqa: F401  (registers the built-in datasets)

MATCH_IOU = 0.5  # a segment pair matches above this IoU
MAX_VOID_FRACTION = 0.5  # an unmatched prediction mostly on ignored pixels is not penalized


def image_pq_stat(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> PQStat:
    """
    PQ statistics of one image, each class one segment.

    Args:
        gt: (H, W) ground-truth class ids in [0, num_classes], num_classes = ignored.
        pred: (H, W) predicted class ids in [0, num_classes], num_classes = not predicted.
    Returns:
        panopticapi's PQStat: per class id, tp / fp / fn counts and the sum of matched IoUs.
    """
    k = num_classes + 1
    # confusion[g, p]: pixels of ground-truth class g predicted as p (void row / column last)
    confusion = np.bincount((gt.astype(np.int64) * k + pred).ravel(), minlength=k * k)
    confusion = confusion.reshape(k, k)
    gt_area = confusion.sum(axis=1)
    pred_area = confusion.sum(axis=0)
    stat = PQStat()
    for c in range(num_classes):
        on_void = confusion[num_classes, c]
        if gt_area[c] > 0 and pred_area[c] > 0:
            intersection = confusion[c, c]
            iou = intersection / (gt_area[c] + pred_area[c] - intersection - on_void)
            if iou > MATCH_IOU:
                stat[c].tp += 1
                stat[c].iou += iou
                continue
        if gt_area[c] > 0:
            stat[c].fn += 1
        if pred_area[c] > 0 and on_void / pred_area[c] <= MAX_VOID_FRACTION:
            stat[c].fp += 1
    return stat


def group_predictions(predictions: Sequence[Mapping]) -> Dict[str, List[Mapping]]:
    """SemSegEvaluator's json list -> {file_name: [{"category_id", "segmentation"}, ...]}."""
    if not isinstance(predictions, list):
        raise ValueError(f"expected a list of predictions, got a {type(predictions).__name__}")
    by_file = defaultdict(list)
    for i, p in enumerate(predictions):
        if not isinstance(p, Mapping):
            raise ValueError(f"prediction #{i} is a {type(p).__name__}, not a dict")
        missing = [k for k in ("file_name", "category_id", "segmentation") if k not in p]
        if missing:
            raise ValueError(f"prediction #{i} lacks {missing}; keys: {sorted(p)}")
        by_file[p["file_name"]].append(p)
    return dict(by_file)


def prediction_map(
    segments: Sequence[Mapping], shape: Sequence[int], to_contiguous: Mapping[int, int], void: int
) -> np.ndarray:
    """(H, W) contiguous class ids of one image's RLE segments; ``void`` where none is."""
    label = np.full(tuple(shape), void, dtype=np.int64)
    covered = np.zeros(tuple(shape), dtype=np.int64)
    for seg in segments:
        name = seg["file_name"]
        if seg["category_id"] not in to_contiguous:
            raise ValueError(
                f"{name}: predicted category_id {seg['category_id']} is not a class of the "
                f"dataset (ids: {sorted(to_contiguous)})"
            )
        mask = mask_util.decode(seg["segmentation"]).astype(bool)
        if mask.shape != tuple(shape):
            raise ValueError(
                f"{name}: predicted mask of size {mask.shape} but the ground truth is {tuple(shape)}"
            )
        label[mask] = to_contiguous[seg["category_id"]]
        covered += mask
    if (covered > 1).any():
        raise ValueError(f"{segments[0]['file_name']}: predicted segments overlap")
    return label


def _contiguous_ids(metadata) -> Dict[int, int]:
    # SemSegEvaluator writes dataset ids when the metadata maps them, else contiguous ids
    num_classes = len(metadata.stuff_classes)
    mapping = metadata.get("stuff_dataset_id_to_contiguous_id", None)
    return dict(mapping) if mapping is not None else {c: c for c in range(num_classes)}


def _ground_truth(path: str, num_classes: int, ignore_label: int) -> np.ndarray:
    gt = load_image_into_numpy_array(path, dtype=np.int64)
    if gt.ndim != 2:
        raise ValueError(f"{path}: semantic ground truth must be a single-channel image")
    bad = np.setdiff1d(np.unique(gt), list(range(num_classes)) + [ignore_label])
    if bad.size:
        raise ValueError(
            f"{path}: labels {bad.tolist()} are neither a class (0..{num_classes - 1}) nor "
            f"ignore_label {ignore_label}"
        )
    return np.where(gt == ignore_label, num_classes, gt)


def evaluate_semantic_pq(dataset_name: str, predictions: Sequence[Mapping]) -> Dict:
    """
    PQ of ``predictions`` (SemSegEvaluator's json list) on dataset ``dataset_name``.

    Returns:
        dict: "PQ", "SQ", "RQ" (percent, averaged over the classes with a segment),
        "num_classes" (that number), "num_images" (evaluated: those with predictions),
        "num_dataset_images" and "per_class" ({class name: {"PQ", "SQ", "RQ", "TP", "FP",
        "FN"}} for the classes with a segment).
    """
    metadata = MetadataCatalog.get(dataset_name)
    for key in ("stuff_classes", "ignore_label"):
        if metadata.get(key, None) is None:
            raise ValueError(f"dataset {dataset_name!r}: its metadata has no {key!r}")
    names, ignore_label = metadata.stuff_classes, metadata.ignore_label
    to_contiguous = _contiguous_ids(metadata)
    gt_files = {
        r["file_name"]: r.get("sem_seg_file_name") for r in DatasetCatalog.get(dataset_name)
    }
    by_file = group_predictions(predictions)
    unknown = sorted(set(by_file) - set(gt_files))
    if unknown:
        raise ValueError(
            f"{len(unknown)} predicted images are not in dataset {dataset_name!r}, e.g. "
            f"{unknown[0]!r}"
        )

    stat = PQStat()
    for file_name, segments in by_file.items():
        if not gt_files[file_name]:
            raise ValueError(f"dataset {dataset_name!r}: {file_name} has no sem_seg_file_name")
        gt = _ground_truth(gt_files[file_name], len(names), ignore_label)
        pred = prediction_map(segments, gt.shape, to_contiguous, void=len(names))
        stat += image_pq_stat(gt, pred, len(names))

    categories = {c: {"isthing": 0} for c in range(len(names))}
    counted = [c for c in categories if stat[c].tp + stat[c].fp + stat[c].fn > 0]
    if not counted:
        raise ValueError(f"no segment in the predictions nor the ground truth of {dataset_name!r}")
    average, per_class = stat.pq_average(categories, isthing=None)
    return {
        "PQ": 100 * average["pq"],
        "SQ": 100 * average["sq"],
        "RQ": 100 * average["rq"],
        "num_classes": average["n"],
        "num_images": len(by_file),
        "num_dataset_images": len(gt_files),
        "per_class": {
            names[c]: {
                **{k.upper(): 100 * v for k, v in per_class[c].items()},
                "TP": stat[c].tp, "FP": stat[c].fp, "FN": stat[c].fn,
            }
            for c in counted
        },
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset-name", required=True, help="a registered semantic dataset")
    parser.add_argument("--json-file", required=True, help="SemSegEvaluator's predictions")
    parser.add_argument("--per-class", action="store_true", help="also print PQ of every class")
    args = parser.parse_args(argv)
    if args.dataset_name not in DatasetCatalog.list():
        parser.error(f"dataset {args.dataset_name!r} is not registered")
    try:
        with open(args.json_file) as f:
            predictions = json.load(f)
        res = evaluate_semantic_pq(args.dataset_name, predictions)
    except (OSError, ValueError) as e:
        parser.error(f"{args.json_file}: {e}")

    print(
        f"{args.dataset_name}: {res['num_images']} of {res['num_dataset_images']} images "
        f"predicted, {res['num_classes']} classes with segments"
    )
    if args.per_class:
        print(f"{'class':<24} {'PQ':>6} {'SQ':>6} {'RQ':>6} {'TP':>5} {'FP':>5} {'FN':>5}")
        for name, r in res["per_class"].items():
            print(
                f"{name:<24} {r['PQ']:6.1f} {r['SQ']:6.1f} {r['RQ']:6.1f} "
                f"{r['TP']:5d} {r['FP']:5d} {r['FN']:5d}"
            )
    print(f"PQ {res['PQ']:.2f}  SQ {res['SQ']:.2f}  RQ {res['RQ']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
