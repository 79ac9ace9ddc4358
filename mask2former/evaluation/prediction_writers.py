"""
Save a model's predictions in the formats the official tools read, one image at a time.

The conversions are the ones detectron2's evaluators apply before scoring (contiguous class ids
back to the dataset's ids through the metadata's ``*_dataset_id_to_contiguous_id``), so that
panopticapi's ``pq_compute`` and pycocotools' ``COCOeval`` on the saved files give the numbers
of ``train_net.py --eval-only``. Layout of the output folder:

    panoptic/<name>.png   COCO-panoptic PNGs (segment id = R + 256 G + 256^2 B, 0 = void)
    panoptic.json         {"annotations": [{"image_id", "file_name", "segments_info"}],
                          "categories"}
    instances.json        COCO results: [{"image_id", "category_id", "segmentation" (RLE),
                          "score", "bbox" (XYWH, from instances.pred_boxes)}]
    sem_seg/<name>.png    semantic labels in the dataset's ids (uint8, uint16 above 255)
"""

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances

from ..modeling.segment_assembly import SEMANTIC_LABELS

__all__ = [
    "dataset_image_ids",
    "contiguous_to_dataset_ids",
    "panoptic_to_coco",
    "instances_to_coco_results",
    "sem_seg_to_label_image",
    "labels_to_label_image",
    "PredictionWriter",
]

PANOPTIC_DIR, PANOPTIC_JSON = "panoptic", "panoptic.json"
INSTANCES_JSON = "instances.json"
SEM_SEG_DIR = "sem_seg"


def dataset_image_ids(dataset_name: str) -> Dict[str, Any]:
    """
    File name (without folder) -> ``image_id`` of the images of the registered dataset
    ``dataset_name``, for the names it holds once; empty when the dataset is not registered, its
    images are not on disk (its loader is not called then) or its records have no ``image_id``
    (semantic datasets).
    """
    if dataset_name not in DatasetCatalog.list():
        return {}
    image_root = MetadataCatalog.get(dataset_name).get("image_root", None)
    if image_root is not None and not os.path.isdir(image_root):
        return {}
    ids: Dict[str, Any] = {}
    repeated = set()
    for record in DatasetCatalog.get(dataset_name):
        if "image_id" not in record:
            continue
        name = os.path.basename(record["file_name"])
        if name in ids:
            repeated.add(name)
        ids[name] = record["image_id"]
    return {name: image_id for name, image_id in ids.items() if name not in repeated}


def contiguous_to_dataset_ids(metadata: Any, field: str) -> Optional[Dict[int, int]]:
    """The inverse of ``metadata.<field>`` (a ``*_dataset_id_to_contiguous_id``), or None when
    the metadata has no such field: the contiguous ids are then the dataset's ids."""
    mapping = metadata.get(field, None)
    return None if mapping is None else {v: k for k, v in mapping.items()}


def _dataset_id(contiguous_id: int, to_dataset: Optional[Mapping[int, int]], what: str) -> int:
    if to_dataset is None:
        return int(contiguous_id)
    if contiguous_id not in to_dataset:
        raise ValueError(
            f"Predicted {what} class {contiguous_id} has no dataset id in the metadata "
            f"(contiguous ids: {sorted(to_dataset)})"
        )
    return to_dataset[contiguous_id]


def panoptic_to_coco(
    panoptic_seg: torch.Tensor, segments_info: List[Dict], metadata: Any
) -> Tuple[np.ndarray, List[Dict]]:
    """
    A panoptic prediction in COCO-panoptic format, as :class:`COCOPanopticEvaluator` converts it.

    Args:
        panoptic_seg: (H, W) int segment ids, 0 = void.
        segments_info: the model's [{"id", "category_id" (contiguous), "isthing"}].
        metadata: with ``thing_dataset_id_to_contiguous_id`` and
            ``stuff_dataset_id_to_contiguous_id``.
    Returns:
        the (H, W, 3) uint8 RGB image of the ids (panopticapi's ``id2rgb``) and the segments
        with dataset category ids: [{"id", "category_id", "iscrowd": 0}].
    """
    from panopticapi.utils import id2rgb

    if segments_info is None:
        raise ValueError(
            "panoptic_seg without segments_info (ids as category * label_divisor + instance) "
            "cannot be saved: the model must list its segments"
        )
    things = contiguous_to_dataset_ids(metadata, "thing_dataset_id_to_contiguous_id")
    stuff = contiguous_to_dataset_ids(metadata, "stuff_dataset_id_to_contiguous_id")
    segments = []
    for info in segments_info:
        isthing = info["isthing"]
        to_dataset, what = (things, "thing") if isthing else (stuff, "stuff")
        category_id = _dataset_id(info["category_id"], to_dataset, what)
        segments.append({"id": int(info["id"]), "category_id": category_id, "iscrowd": 0})
    ids = panoptic_seg.cpu().numpy().astype(np.int64)
    return id2rgb(ids), segments


def instances_to_coco_results(instances: Instances, image_id: Any, metadata: Any) -> List[Dict]:
    """
    COCO results of ``instances`` (``pred_masks`` (N, H, W), ``scores``, ``pred_classes``,
    ``pred_boxes`` XYXY) with dataset category ids, as :class:`COCOEvaluator` writes them:
    RLE masks, boxes as XYWH.
    """
    results = instances_to_coco_json(instances.to("cpu"), image_id)
    things = contiguous_to_dataset_ids(metadata, "thing_dataset_id_to_contiguous_id")
    for result in results:
        result["category_id"] = _dataset_id(result["category_id"], things, "thing")
    return results


def sem_seg_to_label_image(sem_seg: torch.Tensor, metadata: Any) -> np.ndarray:
    """
    The (H, W) label image of scores ``sem_seg`` (K, H, W): the argmax in the dataset's ids
    (``stuff_dataset_id_to_contiguous_id``, as :class:`SemSegEvaluator`'s json), uint8 when
    they fit, else uint16.
    """
    return labels_to_label_image(sem_seg.argmax(dim=0), metadata, sem_seg.shape[0])


def labels_to_label_image(labels: torch.Tensor, metadata: Any, num_classes: Optional[int] = None) -> np.ndarray:
    """
    :func:`sem_seg_to_label_image` of the (H, W) contiguous labels (the semantic output's label
    form); ``num_classes``: the classes whose dataset ids must exist (default: up to the
    largest label).
    """
    labels = labels.cpu().numpy()
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    stuff = contiguous_to_dataset_ids(metadata, "stuff_dataset_id_to_contiguous_id")
    if stuff is not None:
        lookup = np.zeros(num_classes, dtype=np.int64)
        for contiguous_id in range(num_classes):
            lookup[contiguous_id] = _dataset_id(contiguous_id, stuff, "semantic")
        labels = lookup[labels]
    if labels.size and labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"Semantic class id {labels.max()} does not fit a 16-bit PNG")
    return labels.astype(np.uint8 if labels.size == 0 or labels.max() < 256 else np.uint16)


class PredictionWriter:
    """
    Writes the outputs of each image's predictions ("panoptic_seg", "instances", "sem_seg" or
    its label form "sem_seg_labels", those present) under ``output_dir`` (layout in the module doc); :meth:`close` writes the
    json files. Also a context manager that closes itself.
    """

    def __init__(self, output_dir: str, metadata: Any):
        """
        Args:
            output_dir: an existing, writable folder.
            metadata: the dataset's (class id maps; ``thing_classes`` / ``stuff_classes`` name
                the categories of panoptic.json).
        """
        self.output_dir = output_dir
        self.metadata = metadata
        self._panoptic: List[Dict] = []
        self._instances: Optional[List[Dict]] = None

    def _path(self, *parts: str) -> str:
        path = os.path.join(self.output_dir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def write(self, name: str, image_id: Any, predictions: Dict) -> None:
        """
        Args:
            name: the image's file stem in the output (unique per image).
            image_id: the id of the image in the json files.
            predictions: one image's model outputs.
        """
        if "panoptic_seg" in predictions:
            panoptic_seg, segments_info = predictions["panoptic_seg"]
            rgb, segments = panoptic_to_coco(panoptic_seg, segments_info, self.metadata)
            file_name = name + ".png"
            Image.fromarray(rgb).save(self._path(PANOPTIC_DIR, file_name))
            self._panoptic.append(
                {"image_id": image_id, "file_name": file_name, "segments_info": segments}
            )
        if "instances" in predictions:
            if self._instances is None:
                self._instances = []
            self._instances += instances_to_coco_results(
                predictions["instances"], image_id, self.metadata
            )
        labels = None
        if SEMANTIC_LABELS in predictions:
            labels = labels_to_label_image(predictions[SEMANTIC_LABELS], self.metadata)
        elif "sem_seg" in predictions:
            labels = sem_seg_to_label_image(predictions["sem_seg"], self.metadata)
        if labels is not None:
            Image.fromarray(labels).save(self._path(SEM_SEG_DIR, name + ".png"))

    def _categories(self) -> List[Dict]:
        """The panoptic categories by dataset id: things, then stuff that are not things."""
        categories = {}
        for isthing, classes, field in (
            (1, "thing_classes", "thing_dataset_id_to_contiguous_id"),
            (0, "stuff_classes", "stuff_dataset_id_to_contiguous_id"),
        ):
            names = self.metadata.get(classes, None) or []
            for dataset_id, contiguous_id in (self.metadata.get(field, None) or {}).items():
                if dataset_id not in categories and contiguous_id < len(names):
                    categories[dataset_id] = {
                        "id": dataset_id, "name": names[contiguous_id], "isthing": isthing
                    }
        return [categories[k] for k in sorted(categories)]

    def close(self) -> List[str]:
        """Write the json files of the outputs seen; returns the paths written."""
        written = []
        if self._panoptic:
            path = self._path(PANOPTIC_JSON)
            with open(path, "w") as f:
                json.dump({"annotations": self._panoptic, "categories": self._categories()}, f)
            written.append(path)
        if self._instances is not None:
            path = self._path(INSTANCES_JSON)
            with open(path, "w") as f:
                json.dump(self._instances, f)
            written.append(path)
        return written

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
