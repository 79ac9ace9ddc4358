"""MaskFormer.inference gives the outputs of the literal inference (every query's mask resized
to the padded size, cropped and resized to the output size, then the three inferences), whichever
outputs are on. Its shortcuts (full-resolution masks only for the queries an output reads, the
resize chain applied as one linear map per axis a block of rows at a time, one shared sigmoid)
change values by float rounding only: far inside the 2e-4 tolerance on probabilities and scores
of the comparison against the reference implementation, and binary decisions differ only where
a logit or a score is within rounding of its threshold."""
import itertools

import pytest
import torch
from torch.nn import functional as F

from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

import mask2former  # noqa: F401  (registers the components)
from mask2former.modeling.postprocessing import (
    instance_inference,
    panoptic_inference,
    semantic_inference,
)
from model_utils import load_cfg, tiny_opts

PANOPTIC_R50 = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
NUM_CLASSES, QUERIES = 133, 8


def _literal_inference(model, outputs, batched_inputs, images):
    mask_pred_results = F.interpolate(
        outputs["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear", align_corners=False
    )
    is_thing = model._thing_classes_mask(NUM_CLASSES) if model.panoptic_on else None
    results = []
    for mask_cls, mask_pred, x, image_size in zip(
        outputs["pred_logits"], mask_pred_results, batched_inputs, images.image_sizes
    ):
        height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
        r = {}
        if model.sem_seg_postprocess_before_inference:
            mask_pred = sem_seg_postprocess(mask_pred, image_size, height, width)
        if model.semantic_on:
            s = semantic_inference(mask_cls, mask_pred)
            if not model.sem_seg_postprocess_before_inference:
                s = sem_seg_postprocess(s, image_size, height, width)
            r["sem_seg"] = s
        if model.panoptic_on:
            r["panoptic_seg"] = panoptic_inference(
                mask_cls, mask_pred, is_thing, model.object_mask_threshold, model.overlap_threshold
            )
        if model.instance_on:
            r["instances"] = instance_inference(mask_cls, mask_pred, model.test_topk_per_image, is_thing)
        results.append(r)
    return results


def _sorted_instances(inst):
    order = sorted(
        range(len(inst)), key=lambda i: (-inst.scores[i].item(), inst.pred_classes[i].item())
    )
    return inst[torch.tensor(order, dtype=torch.long)]


TASKS = [t for t in itertools.product([True, False], repeat=3) if any(t)]


@pytest.mark.parametrize("semantic,panoptic,instance", TASKS)
def test_inference_equals_literal_inference(semantic, panoptic, instance):
    opts = tiny_opts(NUM_CLASSES) + [
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", str(QUERIES),
        "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", str(semantic),
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", str(panoptic),
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON", str(instance),
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.3",
        "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.2",
        "TEST.DETECTIONS_PER_IMAGE", "6",
    ]
    model = build_model(load_cfg(PANOPTIC_R50, opts)).eval()
    g = torch.Generator().manual_seed(int(semantic) * 4 + int(panoptic) * 2 + int(instance))
    # two images in one padded (64, 96) batch; the second is smaller than the padding, and
    # its output is resized
    images = ImageList(torch.zeros(2, 3, 64, 96), [(64, 96), (50, 70)])
    batched_inputs = [{"height": 64, "width": 96}, {"height": 75, "width": 61}]
    logits = torch.randn(2, QUERIES, NUM_CLASSES + 1, generator=g)
    # a few confident queries, some of thing classes (< 80) and some of stuff classes
    for q, c in enumerate([3, 3, 90, 100, 7]):
        logits[:, q, c] += 9.0
    outputs = {"pred_logits": logits, "pred_masks": 4 * torch.randn(2, QUERIES, 16, 24, generator=g)}
    got = model.inference(outputs, batched_inputs, images)
    want = _literal_inference(model, outputs, batched_inputs, images)
    # literal full-resolution logits, to tell rounding-level disagreements from real ones
    literal_logits = F.interpolate(
        outputs["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear", align_corners=False
    )
    for a, b, logits_full, x, image_size in zip(
        got, want, literal_logits, batched_inputs, images.image_sizes
    ):
        logits_full = sem_seg_postprocess(logits_full, image_size, x["height"], x["width"])
        near_zero = logits_full.abs() < 1e-5  # (Q, H, W) where a mask decision may flip
        assert set(a) == set(b)
        if "sem_seg" in b:
            assert torch.allclose(a["sem_seg"], b["sem_seg"], rtol=0, atol=1e-6)
        if "panoptic_seg" in b:
            assert a["panoptic_seg"][1] == b["panoptic_seg"][1]
            assert len(b["panoptic_seg"][1]) > 0
            differ = a["panoptic_seg"][0] != b["panoptic_seg"][0]
            assert differ.float().mean() < 1e-3
        if "instances" in b:
            p, q = _sorted_instances(a["instances"]), _sorted_instances(b["instances"])
            assert len(q) > 0 and p.image_size == q.image_size
            assert torch.equal(p.pred_classes, q.pred_classes)
            assert torch.allclose(p.scores, q.scores, rtol=0, atol=1e-6)
            differ = p.pred_masks != q.pred_masks
            assert not (differ & ~near_zero.any(0)).any()
