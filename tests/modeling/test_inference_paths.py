"""The two post-processors give the same outputs: the block-wise one (full-resolution masks only
for the queries an output reads, the resize chain applied as one linear map per axis a block of
rows at a time, one shared sigmoid) and the plain one (every query's logits resized to the padded
size and through detectron2's sem_seg_postprocess, as the original implementation does), whichever
outputs are on. They differ by float rounding only: far inside the 2e-4 tolerance on
probabilities and scores of the comparison against the reference implementation, and binary
decisions differ only where a logit or a score is within rounding of its threshold."""
import itertools

import pytest
import torch
from torch.nn import functional as F

from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

import mask2former  # noqa: F401  (registers the components)
from mask2former.maskformer_model import MaskFormer
from mask2former.modeling.postprocessing import (
    BlockwisePostProcessor,
    InferenceSettings,
    PlainPostProcessor,
    build_mask_postprocessor,
)
from model_utils import load_cfg, random_image, tiny_opts

PANOPTIC_R50 = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
NUM_CLASSES, QUERIES = 133, 8
COCO_THINGS = torch.arange(NUM_CLASSES) < 80

TASKS = [t for t in itertools.product([True, False], repeat=3) if any(t)]


def _sorted_instances(inst):
    order = sorted(
        range(len(inst)), key=lambda i: (-inst.scores[i].item(), inst.pred_classes[i].item())
    )
    return inst[torch.tensor(order, dtype=torch.long)]


def _literal_logits(mask_pred, padded_size, image_size, output_size):
    """(Q, H, W) every query's logits through the resize chain, as the original computes them."""
    padded = F.interpolate(mask_pred[None], size=padded_size, mode="bilinear", align_corners=False)[0]
    return sem_seg_postprocess(padded, image_size, *output_size)


def _assert_same_outputs(a, b, logits_full=None):
    """``a`` equals ``b`` up to float rounding. ``logits_full``: (Q, H, W) literal logits, to
    tell rounding-level mask disagreements from real ones (None: at most 0.1 % of pixels)."""
    assert set(a) == set(b)
    if "sem_seg" in b:
        assert torch.allclose(a["sem_seg"], b["sem_seg"], rtol=0, atol=1e-6)
    if "panoptic_seg" in b:
        assert a["panoptic_seg"][1] == b["panoptic_seg"][1]
        differ = a["panoptic_seg"][0] != b["panoptic_seg"][0]
        assert differ.float().mean() < 1e-3
    if "instances" in b:
        p, q = _sorted_instances(a["instances"]), _sorted_instances(b["instances"])
        assert len(q) > 0 and p.image_size == q.image_size
        assert torch.equal(p.pred_classes, q.pred_classes)
        assert torch.allclose(p.scores, q.scores, rtol=0, atol=1e-6)
        differ = p.pred_masks != q.pred_masks
        if logits_full is None:
            assert differ.float().mean() < 1e-3
        else:
            near_zero = logits_full.abs() < 1e-5  # (Q, H, W) where a mask decision may flip
            assert not (differ & ~near_zero.any(0)).any()


def _random_predictions(g, batch=1, low=(16, 24)):
    logits = torch.randn(batch, QUERIES, NUM_CLASSES + 1, generator=g)
    # a few confident queries, some of thing classes (< 80) and some of stuff classes
    for q, c in enumerate([3, 3, 90, 100, 7]):
        logits[:, q, c] += 9.0
    return logits, 4 * torch.randn(batch, QUERIES, *low, generator=g)


def _settings(semantic, panoptic, instance, before_inference=True):
    return InferenceSettings(semantic, panoptic, instance, 0.3, 0.2, 6, before_inference)


# (low-res size, padded size, image size in it, output size)
SIZES = [
    ((16, 24), (64, 96), (64, 96), (64, 96)),  # unpadded, output at the image size
    ((16, 24), (64, 96), (50, 70), (75, 61)),  # padded, output resized up and down
    ((20, 30), (80, 120), (80, 117), (40, 58)),  # output smaller than the image
    ((9, 13), (36, 52), (33, 52), (33, 52)),  # padded rows only, odd low-res size
]


@pytest.mark.parametrize("low,padded,image,out", SIZES)
@pytest.mark.parametrize("semantic,panoptic,instance", TASKS)
def test_blockwise_equals_plain(low, padded, image, out, semantic, panoptic, instance):
    g = torch.Generator().manual_seed(sum(low) + 4 * semantic + 2 * panoptic + instance)
    (mask_cls,), (mask_pred,) = _random_predictions(g, low=low)
    is_thing = COCO_THINGS if panoptic else None
    settings = _settings(semantic, panoptic, instance)
    args = (mask_cls, mask_pred, padded, image, out, is_thing)
    got = BlockwisePostProcessor(settings)(*args)
    want = PlainPostProcessor(settings)(*args)
    _assert_same_outputs(got, want, _literal_logits(mask_pred, padded, image, out))
    if panoptic:
        assert len(want["panoptic_seg"][1]) > 0


@pytest.mark.parametrize("low,padded,image,out", SIZES)
def test_semantic_after_inference_equals_plain(low, padded, image, out):
    """sem_seg_postprocess_before_inference=False: the semantic scores are resized, not the
    masks; both implementations, and the original's order (semantic scores at the padded size,
    then sem_seg_postprocess)."""
    g = torch.Generator().manual_seed(7)
    (mask_cls,), (mask_pred,) = _random_predictions(g, low=low)
    settings = _settings(True, False, False, before_inference=False)
    args = (mask_cls, mask_pred, padded, image, out)
    got = BlockwisePostProcessor(settings)(*args)["sem_seg"]
    want = PlainPostProcessor(settings)(*args)["sem_seg"]
    padded_logits = F.interpolate(mask_pred[None], size=padded, mode="bilinear", align_corners=False)[0]
    scores = torch.einsum("qc,qhw->chw", mask_cls.softmax(-1)[:, :-1], padded_logits.sigmoid())
    original = sem_seg_postprocess(scores, image, *out)
    assert got.shape == want.shape == (NUM_CLASSES, *out)
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    assert torch.allclose(want, original, rtol=0, atol=1e-6)


def _model_opts(semantic, panoptic, instance):
    return tiny_opts(NUM_CLASSES) + [
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", str(QUERIES),
        "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", str(semantic),
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", str(panoptic),
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON", str(instance),
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.3",
        "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.2",
        "TEST.DETECTIONS_PER_IMAGE", "6",
    ]


@pytest.mark.parametrize("semantic,panoptic,instance", TASKS)
def test_model_inference_blockwise_by_default_equals_plain(semantic, panoptic, instance):
    cfg = load_cfg(PANOPTIC_R50, _model_opts(semantic, panoptic, instance))
    model = build_model(cfg).eval()
    plain = MaskFormer(cfg, postprocessor="plain").eval()
    assert isinstance(model.postprocessor, BlockwisePostProcessor)
    assert isinstance(plain.postprocessor, PlainPostProcessor)
    # the original's attributes, read from the post-processor's settings
    assert (model.semantic_on, model.panoptic_on, model.instance_on) == (semantic, panoptic, instance)
    assert model.sem_seg_postprocess_before_inference == (panoptic or instance)
    assert (model.object_mask_threshold, model.overlap_threshold, model.test_topk_per_image) == (0.3, 0.2, 6)
    g = torch.Generator().manual_seed(int(semantic) * 4 + int(panoptic) * 2 + int(instance))
    # two images in one padded (64, 96) batch; the second is smaller than the padding, and
    # its output is resized
    images = ImageList(torch.zeros(2, 3, 64, 96), [(64, 96), (50, 70)])
    batched_inputs = [{"height": 64, "width": 96}, {"height": 75, "width": 61}]
    logits, masks = _random_predictions(g, batch=2)
    outputs = {"pred_logits": logits, "pred_masks": masks}
    got = model.inference(outputs, batched_inputs, images)
    want = plain.inference(outputs, batched_inputs, images)
    for a, b, mask_pred, x, image_size in zip(got, want, masks, batched_inputs, images.image_sizes):
        _assert_same_outputs(a, b, _literal_logits(mask_pred, (64, 96), image_size, (x["height"], x["width"])))
        if panoptic:
            assert len(b["panoptic_seg"][1]) > 0


def test_model_end_to_end_with_either_postprocessor():
    cfg = load_cfg(PANOPTIC_R50, _model_opts(True, True, True))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    plain = MaskFormer(cfg, postprocessor="plain").eval()
    plain.load_state_dict(model.state_dict())
    inputs = [
        {"image": random_image(70, 90), "height": 100, "width": 120},
        {"image": random_image(45, 33, seed=1)},
    ]
    with torch.no_grad():
        got, want = model(inputs), plain(inputs)
    assert [tuple(o["sem_seg"].shape[1:]) for o in want] == [(100, 120), (45, 33)]
    for a, b in zip(got, want):
        _assert_same_outputs(a, b)


def test_unknown_postprocessor_and_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="'literal' is not one of \\['blockwise', 'plain'\\]"):
        build_mask_postprocessor("literal", _settings(True, True, True))
    with pytest.raises(ValueError, match="sem_seg_postprocess_before_inference=False"):
        _settings(True, True, False, before_inference=False)
    with pytest.raises(ValueError, match="at least one of"):
        _settings(False, False, False)
