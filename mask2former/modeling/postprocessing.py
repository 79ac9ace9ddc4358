"""
Turn one image's per-query predictions into semantic, panoptic and instance outputs
(detectron2 formats).

:class:`MaskPostProcessor` is the interface: class logits (Q, K + 1) (the last class is "no
object") and mask logits (Q, h, w) of one image, the padded batch size, the image's size in it
and the output size go in; {"sem_seg", "panoptic_seg", "instances"} come out, as configured.
The semantic output is detectron2's "sem_seg" (K, H, W) scores by default, or, with
``semantic_output="labels"`` (for large outputs), their argmax "sem_seg_labels" (H, W) and its
score "sem_seg_label_scores" (H, W); :func:`semantic_labels` reads either.
Which queries panoptic inference keeps, the top-k instance selection, the segment assembly and
the instance scoring are done here, once, for both implementations
(:mod:`~mask2former.modeling.segment_assembly`, fed a block of output rows at a time); they
differ only in how they get the full-resolution logits of the queries:

- :class:`PlainPostProcessor`: every query's logits resized to the padded size and through
  detectron2's ``sem_seg_postprocess``, as the original implementation does, as one block;
- :class:`BlockwisePostProcessor` (the default): the same logits from
  :func:`~mask2former.modeling.mask_resize.logit_row_blocks`, a few output rows at a time, so
  that no full-resolution float map of every query, or of the panoptic or instance queries,
  ever exists. Equal to the plain one up to float rounding.

:func:`build_mask_postprocessor` chooses between them by name.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch.nn import functional as F

from detectron2.modeling.postprocessing import sem_seg_postprocess

from .mask_resize import add_semantic_rows, logit_row_blocks, semantic_rows, semantic_scores_buffer
from .segment_assembly import (  # noqa: F401  (argmax_over_first_dim, mask_boxes, ...: public here too)
    SEMANTIC_LABEL_SCORES,
    SEMANTIC_LABELS,
    InstanceRows,
    PanopticRows,
    SemanticLabels,
    argmax_over_first_dim,
    confident_queries,
    instances_from_query_masks,
    mask_boxes,
    panoptic_segments,
    semantic_labels,
)

Size = Tuple[int, int]
# the forms of the semantic output (MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT)
SEMANTIC_OUTPUTS = ("scores", "labels")
# classes resized at once when the semantic scores are resized to the output size as labels
_CLASS_CHUNK_BYTES = 64 << 20


def select_instances(
    mask_cls: torch.Tensor, topk: int, thing_only: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    The ``topk`` highest (query, class) probabilities of one image.

    Args:
        mask_cls: (Q, K + 1) class logits.
        topk: number of instances (``TEST.DETECTIONS_PER_IMAGE``).
        thing_only: optional (K,) bool; when given, selections of other classes are dropped.
    Returns:
        class probabilities (N,), classes (N,) and query indices (N,), N <= topk.
    """
    num_classes = mask_cls.shape[-1] - 1
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    topk = min(topk, scores.numel())
    scores_per_image, topk_indices = scores.flatten(0, 1).topk(topk, sorted=False)
    labels_per_image = topk_indices % num_classes
    query_indices = topk_indices // num_classes
    if thing_only is not None:
        keep = thing_only[labels_per_image]
        scores_per_image = scores_per_image[keep]
        labels_per_image = labels_per_image[keep]
        query_indices = query_indices[keep]
    return scores_per_image, labels_per_image, query_indices


@dataclass(frozen=True)
class InferenceSettings:
    """
    What inference produces and how (``MODEL.MASK_FORMER.TEST``, ``TEST.DETECTIONS_PER_IMAGE``).

    semantic_on, panoptic_on, instance_on: which outputs are produced.
    object_mask_threshold, overlap_threshold: panoptic inference thresholds.
    test_topk_per_image: instances kept per image.
    sem_seg_postprocess_before_inference: resize mask logits to the output size before
    inference; False (semantic output only) resizes the semantic scores instead.
    semantic_output: "scores", detectron2's "sem_seg" (K, H, W); or "labels", their argmax
    (H, W) and its score under SEMANTIC_LABELS and SEMANTIC_LABEL_SCORES, computed without
    ever holding the scores of every class at the output size (for large outputs).
    """

    semantic_on: bool
    panoptic_on: bool
    instance_on: bool
    object_mask_threshold: float
    overlap_threshold: float
    test_topk_per_image: int
    sem_seg_postprocess_before_inference: bool = True
    semantic_output: str = "scores"

    def __post_init__(self):
        if self.semantic_output not in SEMANTIC_OUTPUTS:
            raise ValueError(
                f"InferenceSettings: semantic_output (MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT) must be "
                f"one of {SEMANTIC_OUTPUTS}, got {self.semantic_output!r}"
            )
        if not (self.semantic_on or self.panoptic_on or self.instance_on):
            raise ValueError("InferenceSettings: at least one of semantic_on, panoptic_on, instance_on must be True")
        if not self.sem_seg_postprocess_before_inference and not (
            self.semantic_on and not self.panoptic_on and not self.instance_on
        ):
            raise ValueError(
                "InferenceSettings: sem_seg_postprocess_before_inference=False is only for the "
                "semantic output alone (panoptic and instance inference need resized masks)"
            )


class MaskPostProcessor(ABC):
    """
    One image's outputs from its per-query predictions, as ``settings`` asks. Subclasses
    implement :meth:`logit_blocks`, the full-resolution logits; everything else is shared.
    """

    def __init__(self, settings: InferenceSettings):
        self.settings = settings

    @abstractmethod
    def logit_blocks(
        self, mask_pred: torch.Tensor, padded_size: Size, image_size: Size, output_size: Size
    ) -> Iterator[Tuple[int, int, torch.Tensor]]:
        """
        The logits of detectron2's resize chain of the (Q, h, w) mask logits (to
        ``padded_size``, crop to ``image_size``, to ``output_size``), as (y0, y1, logits
        (y1 - y0, Q, W)) blocks covering the output rows in order; the caller may modify them.
        """

    def __call__(
        self,
        mask_cls: torch.Tensor,
        mask_pred: torch.Tensor,
        padded_size: Size,
        image_size: Size,
        output_size: Size,
        is_thing: Optional[torch.Tensor] = None,
    ) -> Dict:
        """
        Args:
            mask_cls: (Q, K + 1) class logits; mask_pred: (Q, h, w) mask logits.
            padded_size, image_size: the batch's padded input size and this image's size in it.
            output_size: (height, width) of the outputs.
            is_thing: (K,) bool, needed by panoptic inference; when given, instance inference
                keeps thing classes only.
        Returns:
            {"sem_seg": (K, H, W), "panoptic_seg": (ids (H, W), segments_info), "instances"},
            the ones turned on; with ``semantic_output`` "labels", SEMANTIC_LABELS (H, W) and
            SEMANTIC_LABEL_SCORES (H, W) instead of "sem_seg".
        """
        settings = self.settings
        class_probs = F.softmax(mask_cls, dim=-1)[:, :-1] if settings.semantic_on else None
        as_labels = settings.semantic_output == "labels"
        if not settings.sem_seg_postprocess_before_inference:
            # the image's part of the padded frame, then resized as sem_seg_postprocess resizes
            # the semantic scores (cropping commutes with the per-pixel class mixing)
            scores = self._outputs(mask_pred, padded_size, image_size, image_size, class_probs)["sem_seg"]
            if as_labels:
                return resized_semantic_labels(scores, tuple(output_size))
            if tuple(image_size) != tuple(output_size):
                scores = F.interpolate(scores[None], size=output_size, mode="bilinear", align_corners=False)[0]
            return {"sem_seg": scores}

        panoptic = panoptic_queries = instances = None
        if settings.panoptic_on:
            if is_thing is None:
                raise ValueError("panoptic inference needs is_thing, the (K,) bool thing-class mask")
            keep, query_scores, query_classes = confident_queries(mask_cls, settings.object_mask_threshold)
            panoptic = PanopticRows(
                query_scores[keep], query_classes[keep], is_thing, settings.overlap_threshold, tuple(output_size)
            )
            panoptic_queries = keep.nonzero()[:, 0]  # in query order
        if settings.instance_on:
            scores, labels, queries = select_instances(mask_cls, settings.test_topk_per_image, is_thing)
            instances = InstanceRows(queries, tuple(output_size), mask_pred.dtype)
        result = self._outputs(
            mask_pred, padded_size, image_size, output_size, class_probs, panoptic, panoptic_queries, instances,
            as_labels,
        )
        if panoptic is not None:
            result["panoptic_seg"] = panoptic.result()
        if instances is not None:
            result["instances"] = instances.result(scores, labels)
        return result

    def _outputs(
        self, mask_pred, padded_size, image_size, output_size, class_probs: Optional[torch.Tensor],
        panoptic: Optional[PanopticRows] = None, panoptic_queries: Optional[torch.Tensor] = None,
        instances: Optional[InstanceRows] = None, as_labels: bool = False,
    ) -> Dict:
        """Feeds each block of logits to the outputs: the semantic output (returned, when
        ``class_probs`` is given: the scores, or with ``as_labels`` their argmax, each block's
        scores taken while in the cache), ``panoptic`` (the probabilities of
        ``panoptic_queries``) and ``instances``."""
        result, labels = {}, None
        if class_probs is not None:
            if as_labels:
                labels = SemanticLabels(tuple(output_size), mask_pred.dtype, mask_pred.device)
            else:
                result["sem_seg"] = semantic_scores_buffer(class_probs, output_size, mask_pred.dtype)
            mixing = class_probs.t().to(mask_pred.dtype).contiguous()  # (K, Q)
        for y0, y1, block in self.logit_blocks(mask_pred, padded_size, image_size, output_size):
            if instances is not None:
                instances.add_logits(y0, y1, block)
            block = block.sigmoid_()  # (n, Q, W), one sigmoid for every output
            if labels is not None:
                scores = semantic_rows(mixing, block).view(len(mixing), y1 - y0, block.shape[2])
                labels.add(scores, rows=slice(y0, y1))
            elif class_probs is not None:
                add_semantic_rows(result["sem_seg"], mixing, y0, y1, block)
            if panoptic is not None:
                panoptic.add(y0, y1, block[:, panoptic_queries].transpose(0, 1))
            if instances is not None:
                instances.add_probs(y0, y1, block)
        if labels is not None:
            result.update(labels.result())
        return result


def resized_semantic_labels(scores: torch.Tensor, output_size: Size) -> Dict[str, torch.Tensor]:
    """
    The label form of the (K, h, w) semantic scores resized (bilinear) to ``output_size``, as
    :class:`SemanticLabels`' result: a few classes are resized at a time (a resize treats each
    class alone, so the values are the whole resize's), and their running argmax kept.
    """
    labels = SemanticLabels(output_size, scores.dtype, scores.device)
    if tuple(scores.shape[1:]) == tuple(output_size):
        labels.add(scores)
        return labels.result()
    class_bytes = max(1, output_size[0] * output_size[1] * scores.element_size())
    chunk = max(1, _CLASS_CHUNK_BYTES // class_bytes)
    for c0 in range(0, scores.shape[0], chunk):
        resized = F.interpolate(scores[None, c0 : c0 + chunk], size=output_size, mode="bilinear", align_corners=False)
        labels.add(resized[0], first_class=c0)
    return labels.result()


class PlainPostProcessor(MaskPostProcessor):
    """Every query's logits at full resolution, through detectron2's ``sem_seg_postprocess``:
    the original implementation's computation, simple and memory-hungry ((Q, H, W) logits)."""

    def logit_blocks(self, mask_pred, padded_size, image_size, output_size):
        logits = F.interpolate(mask_pred[None], size=padded_size, mode="bilinear", align_corners=False)[0]
        logits = sem_seg_postprocess(logits, image_size, *output_size)  # (Q, H, W)
        yield 0, logits.shape[1], logits.transpose(0, 1)


class BlockwisePostProcessor(MaskPostProcessor):
    """The logits a block of output rows at a time
    (:func:`~mask2former.modeling.mask_resize.logit_row_blocks`): the semantic scores are
    summed per block, and the panoptic and instance outputs keep only their own results."""

    def logit_blocks(self, mask_pred, padded_size, image_size, output_size):
        return logit_row_blocks(mask_pred, padded_size, image_size, output_size)


POSTPROCESSORS = {"plain": PlainPostProcessor, "blockwise": BlockwisePostProcessor}


def build_mask_postprocessor(name: str, settings: InferenceSettings) -> MaskPostProcessor:
    """The post-processor ``name``: "blockwise" or "plain"."""
    if name not in POSTPROCESSORS:
        raise ValueError(f"postprocessor {name!r} is not one of {sorted(POSTPROCESSORS)}")
    return POSTPROCESSORS[name](settings)
