"""Multi-scale and flip test-time augmentation for semantic segmentation."""

import copy
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from fvcore.transforms import HFlipTransform
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detectron2.config import CfgNode
from detectron2.data.detection_utils import read_image
from detectron2.modeling import DatasetMapperTTA

__all__ = ["SemanticSegmentorWithTTA"]


class SemanticSegmentorWithTTA(nn.Module):
    """
    Wraps a semantic segmentor (a model that returns ``[{"sem_seg": (C, H, W)}]`` at the
    resolution given by the input's "height" / "width") to average its class probabilities over
    resized and flipped copies of each image (``TEST.AUG.MIN_SIZES``, ``MAX_SIZE``, ``FLIP``).
    Only inference is supported.
    """

    def __init__(
        self,
        cfg: CfgNode,
        model: nn.Module,
        tta_mapper: Optional[Callable[[Dict], List[Dict]]] = None,
        batch_size: int = 1,
    ):
        """
        Args:
            cfg: config; its TEST.AUG.* keys define the augmentations.
            model: the semantic segmentor (a DistributedDataParallel is unwrapped).
            tta_mapper: maps one input dict to a list of augmented input dicts, each with a
                "transforms" entry (a TransformList); default ``DatasetMapperTTA(cfg)``.
            batch_size: number of augmented images run through the model at once.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.cfg = cfg.clone()
        self.model = model
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if getattr(model, "semantic_output", "scores") != "scores":
            # the mean over augmentations needs every class's scores, which "labels" never holds
            raise ValueError(
                "SemanticSegmentorWithTTA needs the semantic scores: set "
                f"MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT to 'scores', not {model.semantic_output!r}"
            )
        self.batch_size = batch_size

    def _with_image(self, dataset_dict: Dict) -> Dict:
        """Read the image of a dataset dict that has only its file name."""
        ret = copy.copy(dataset_dict)
        if "image" not in ret:
            fmt = getattr(self.model, "input_format", self.cfg.INPUT.FORMAT)
            image = read_image(ret.pop("file_name"), fmt)
            ret["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if "height" not in ret or "width" not in ret:
            ret["height"], ret["width"] = ret["image"].shape[1:]
        return ret

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """
        Args:
            batched_inputs: dataset dicts in the model's input format ("image" (C, H, W) or
                "file_name", and optionally "height", "width": the output resolution).

        Returns:
            one dict per input with "sem_seg": (num_classes, height, width), the mean over
            augmentations of the model's per-class scores.
        """
        return [self._inference_one_image(self._with_image(x)) for x in batched_inputs]

    def _inference_one_image(self, dataset_dict: Dict) -> Dict[str, torch.Tensor]:
        augmented = self.tta_mapper(dataset_dict)
        if len(augmented) == 0:
            raise ValueError("The TTA mapper returned no augmented inputs")
        total: Optional[torch.Tensor] = None
        with torch.no_grad():
            for start in range(0, len(augmented), self.batch_size):
                chunk = augmented[start : start + self.batch_size]
                inputs = [{k: v for k, v in x.items() if k != "transforms"} for x in chunk]
                outputs = self.model(inputs)
                for x, out in zip(chunk, outputs):
                    scores = out["sem_seg"]  # (C, height, width) at the requested resolution
                    if any(isinstance(t, HFlipTransform) for t in x["transforms"].transforms):
                        scores = scores.flip(dims=[2])
                    total = scores if total is None else total + scores
        return {"sem_seg": total / len(augmented)}
