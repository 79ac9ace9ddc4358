"""The ``MaskFormer`` meta-architecture: backbone + mask-classification head + set criterion."""
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    SEM_SEG_HEADS_REGISTRY,
    build_backbone,
    build_sem_seg_head,
)
from detectron2.modeling.backbone import Backbone
from detectron2.structures import BitMasks, ImageList
from detectron2.utils.memory import retry_if_cuda_oom

from ...utils.registry import lookup
from ..backbone.checkpointing import checkpoint_backbone_blocks
from ..criterion import SetCriterion
from ..matcher import HungarianMatcher
from ..postprocessing import InferenceSettings, MaskPostProcessor, build_mask_postprocessor


def build_criterion(
    cfg,
    num_classes: int,
    matcher_cls: type = HungarianMatcher,
    criterion_cls: type = SetCriterion,
) -> SetCriterion:
    """The Hungarian-matched set criterion with its loss weights, from ``MODEL.MASK_FORMER``
    (``matcher_cls`` / ``criterion_cls``: subclasses to build instead, e.g. the video ones)."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = matcher_cls(
        cost_class=mf.CLASS_WEIGHT,
        cost_mask=mf.MASK_WEIGHT,
        cost_dice=mf.DICE_WEIGHT,
        num_points=mf.TRAIN_NUM_POINTS,
    )
    weight_dict = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
    if mf.DEEP_SUPERVISION:
        # One auxiliary prediction per earlier decoder output (DEC_LAYERS counts the
        # learnable-query prediction, so there are DEC_LAYERS - 1 of them).
        aux_weight_dict = {}
        for i in range(mf.DEC_LAYERS - 1):
            aux_weight_dict.update({k + f"_{i}": v for k, v in weight_dict.items()})
        weight_dict.update(aux_weight_dict)
    return criterion_cls(
        num_classes,
        matcher=matcher,
        weight_dict=weight_dict,
        eos_coef=mf.NO_OBJECT_WEIGHT,
        losses=["labels", "masks"],
        num_points=mf.TRAIN_NUM_POINTS,
        oversample_ratio=mf.OVERSAMPLE_RATIO,
        importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
    )


def set_mask_classification_modules(
    model: nn.Module,
    backbone: Backbone,
    sem_seg_head: nn.Module,
    criterion: nn.Module,
    num_queries: int,
    metadata,
    size_divisibility: int,
    pixel_mean: Tuple[float],
    pixel_std: Tuple[float],
) -> None:
    """
    The modules and input normalisation that the image ``MaskFormer`` and the video
    ``VideoMaskFormer`` share, set on ``model`` under the original's attribute names;
    ``size_divisibility < 0`` means the backbone's.
    """
    model.backbone = backbone
    model.sem_seg_head = sem_seg_head
    model.criterion = criterion
    model.num_queries = num_queries
    model.metadata = metadata
    model.size_divisibility = backbone.size_divisibility if size_divisibility < 0 else size_divisibility
    model.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
    model.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)


def normalized_batch(
    model: nn.Module, images: Sequence[torch.Tensor], describe: Callable[[int], str]
) -> ImageList:
    """
    (C, H, W) images normalised with ``model``'s pixel mean and std, on its device, and padded
    into one (N, C, H_pad, W_pad) batch to its ``size_divisibility``; ``describe(i)`` names
    image ``i`` in the error for a wrong shape.
    """
    channels = model.pixel_mean.shape[0]
    normalized = []
    for i, image in enumerate(images):
        if image.dim() != 3 or image.shape[0] != channels:
            raise ValueError(
                f"{describe(i)} must be ({channels}, H, W) in INPUT.FORMAT channel order, "
                f"got shape {tuple(image.shape)}"
            )
        normalized.append((image.to(model.pixel_mean.device) - model.pixel_mean) / model.pixel_std)
    return ImageList.from_tensors(normalized, model.size_divisibility)


def _setting(name: str) -> property:
    """A read-only attribute of the original ``MaskFormer``, now one of the post-processor's
    :class:`~mask2former.modeling.postprocessing.InferenceSettings`."""
    return property(lambda self: getattr(self.postprocessor.settings, name))


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """
    Mask classification for semantic, instance and panoptic segmentation: a backbone, a head
    predicting Q (class, mask) pairs, trained with a Hungarian-matched set loss.
    """

    semantic_on = _setting("semantic_on")
    panoptic_on = _setting("panoptic_on")
    instance_on = _setting("instance_on")
    object_mask_threshold = _setting("object_mask_threshold")
    overlap_threshold = _setting("overlap_threshold")
    test_topk_per_image = _setting("test_topk_per_image")
    sem_seg_postprocess_before_inference = _setting("sem_seg_postprocess_before_inference")
    semantic_output = _setting("semantic_output")

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Tuple[float],
        pixel_std: Tuple[float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
        postprocessor: str = "blockwise",
        semantic_output: str = "scores",
    ):
        """
        Args:
            backbone, sem_seg_head, criterion: the modules.
            num_queries: number of queries Q.
            object_mask_threshold, overlap_threshold: panoptic inference thresholds.
            metadata: dataset metadata (thing classes for panoptic and instance inference).
            size_divisibility: images are padded to a multiple of this.
            sem_seg_postprocess_before_inference: resize mask logits to the output size before
                inference (needed by panoptic and instance inference) instead of after.
            pixel_mean, pixel_std: per-channel normalization of the input.
            semantic_on, panoptic_on, instance_on: which outputs inference produces.
            test_topk_per_image: instances kept per image by instance inference.
            postprocessor: how the outputs are computed from the predictions, "blockwise" or
                "plain" (see :mod:`~mask2former.modeling.postprocessing`; the same outputs up
                to float rounding, "plain" with full-resolution logits of every query).
            semantic_output: "scores" (detectron2's "sem_seg" (K, H, W)) or "labels" (their
                argmax (H, W) and its score, in bounded memory at large output sizes; see
                :class:`~mask2former.modeling.postprocessing.InferenceSettings`).
        """
        super().__init__()
        set_mask_classification_modules(
            self, backbone, sem_seg_head, criterion, num_queries, metadata, size_divisibility,
            pixel_mean, pixel_std,
        )
        settings = InferenceSettings(
            semantic_on, panoptic_on, instance_on, object_mask_threshold, overlap_threshold,
            test_topk_per_image, sem_seg_postprocess_before_inference, semantic_output,
        )
        self.postprocessor: MaskPostProcessor = build_mask_postprocessor(postprocessor, settings)

    @classmethod
    def from_config(cls, cfg):
        # Checked first, for an error that names the config key.
        lookup(BACKBONE_REGISTRY, cfg.MODEL.BACKBONE.NAME, "MODEL.BACKBONE.NAME", "backbone")
        lookup(SEM_SEG_HEADS_REGISTRY, cfg.MODEL.SEM_SEG_HEAD.NAME, "MODEL.SEM_SEG_HEAD.NAME", "head")
        backbone = build_backbone(cfg)
        if cfg.MODEL.MASK_FORMER.get("ACTIVATION_CHECKPOINTING", False):
            checkpoint_backbone_blocks(backbone)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        test = cfg.MODEL.MASK_FORMER.TEST
        if not (test.SEMANTIC_ON or test.PANOPTIC_ON or test.INSTANCE_ON):
            raise ValueError(
                "MODEL.MASK_FORMER.TEST: at least one of SEMANTIC_ON, PANOPTIC_ON, INSTANCE_ON "
                "must be True"
            )
        if len(cfg.MODEL.PIXEL_MEAN) != len(cfg.MODEL.PIXEL_STD):
            raise ValueError("MODEL.PIXEL_MEAN and MODEL.PIXEL_STD must have the same length")
        dataset = cfg.DATASETS.TRAIN[0] if len(cfg.DATASETS.TRAIN) else "__unused__"
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": build_criterion(cfg, sem_seg_head.num_classes),
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(dataset),
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON or test.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": test.SEMANTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "semantic_output": test.get("SEMANTIC_OUTPUT", "scores"),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalize the images and pad them into one (B, C, H_pad, W_pad) batch."""
        for i, x in enumerate(batched_inputs):
            if "image" not in x:
                raise KeyError(f"batched_inputs[{i}] has no 'image' (keys: {sorted(x)})")
        return normalized_batch(
            self, [x["image"] for x in batched_inputs], lambda i: f"batched_inputs[{i}]['image']"
        )

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: a list of dicts in detectron2's format, each with "image" (C, H, W),
                optionally "height"/"width" (the output size) and, in training, "instances"
                with gt_classes (N,) and gt_masks (N, H, W).
        Returns:
            in training, a dict of weighted losses; in inference, one dict per image with
            "sem_seg" (K, height, width) (or, with semantic_output "labels", "sem_seg_labels"
            and "sem_seg_label_scores", both (height, width)), "panoptic_seg" (ids (height,
            width), segments_info) and/or "instances", as configured.
        """
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        outputs = self.sem_seg_head(features)

        if self.training:
            targets = self.prepare_targets(batched_inputs, images)
            losses = self.criterion(outputs, targets)
            for k in list(losses.keys()):
                if k in self.criterion.weight_dict:
                    losses[k] *= self.criterion.weight_dict[k]
                else:
                    losses.pop(k)
            return losses
        return self.inference(outputs, batched_inputs, images)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """Per image {"labels": (N,), "masks": (N, H_pad, W_pad)}, masks zero-padded like the images."""
        h_pad, w_pad = images.tensor.shape[-2:]
        new_targets = []
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise KeyError(
                    f"batched_inputs[{i}] has no 'instances': training needs the dataset mapper's "
                    "targets (see INPUT.DATASET_MAPPER_NAME)"
                )
            targets_per_image = x["instances"].to(self.device)
            gt_masks = targets_per_image.gt_masks
            if isinstance(gt_masks, BitMasks):
                gt_masks = gt_masks.tensor
            padded_masks = torch.zeros(
                (gt_masks.shape[0], h_pad, w_pad), dtype=gt_masks.dtype, device=gt_masks.device
            )
            padded_masks[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            new_targets.append({"labels": targets_per_image.gt_classes, "masks": padded_masks})
        return new_targets

    def _thing_classes_mask(self, num_classes: int) -> torch.Tensor:
        """(K,) bool: which contiguous class ids are thing classes, from the dataset metadata."""
        ids = getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None)
        if ids is None:
            raise ValueError(
                f"Panoptic/instance inference needs the metadata 'thing_dataset_id_to_contiguous_id' "
                f"of dataset {self.metadata.name!r} (DATASETS.TRAIN[0]); register the dataset or "
                "turn MODEL.MASK_FORMER.TEST.PANOPTIC_ON off"
            )
        is_thing = torch.zeros(num_classes, dtype=torch.bool)
        for contiguous_id in ids.values():
            if contiguous_id < num_classes:
                is_thing[contiguous_id] = True
        return is_thing

    def inference(self, outputs: Dict, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """
        Semantic, panoptic and instance outputs of each image from the last layer's predictions,
        "pred_logits" (B, Q, K + 1) and "pred_masks" (B, Q, h, w) mask logits, by
        ``self.postprocessor`` at each input's "height" and "width" (default: its image size).
        """
        is_thing = None
        if self.panoptic_on:
            is_thing = self._thing_classes_mask(outputs["pred_logits"].shape[-1] - 1).to(self.device)
        padded_size = tuple(images.tensor.shape[-2:])
        processed_results = []
        for mask_cls, mask_pred, input_per_image, image_size in zip(
            outputs["pred_logits"], outputs["pred_masks"], batched_inputs, images.image_sizes
        ):
            output_size = (
                input_per_image.get("height", image_size[0]),
                input_per_image.get("width", image_size[1]),
            )
            processed_results.append(
                retry_if_cuda_oom(self.postprocessor)(
                    mask_cls, mask_pred, padded_size, tuple(image_size), output_size, is_thing
                )
            )
        return processed_results
