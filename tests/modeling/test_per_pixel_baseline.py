"""The MaskFormer paper's per-pixel baselines, as heads of detectron2's SemanticSegmentor."""
import pytest
import torch
from torch.nn import functional as F

from detectron2.modeling import build_model
from detectron2.modeling.meta_arch import SemanticSegmentor

import mask2former  # noqa: F401  (registers the components)
from mask2former.modeling.meta_arch.per_pixel_baseline import (
    PerPixelBaselineHead,
    PerPixelBaselinePlusHead,
)
from model_utils import load_cfg, random_image

BASELINE = "configs/synthetic/per_pixel_baseline.yaml"
PLUS = "configs/synthetic/per_pixel_baseline_plus.yaml"
H = W = 64


def _labels(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 8, (H, W), generator=g)
    labels[:8] = 255  # unlabelled rows
    return labels


def _batch(with_labels=True):
    batch = []
    for seed in (0, 1):
        sample = {"image": random_image(H, W, seed), "height": H, "width": W}
        if with_labels:
            sample["sem_seg"] = _labels(seed)
        batch.append(sample)
    return batch


def _model(config, opts=()):
    torch.manual_seed(0)
    return build_model(load_cfg(config, list(opts)))


def test_baseline_loss_is_the_weighted_per_pixel_cross_entropy():
    model = _model(BASELINE, ["MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", "2.5"])
    assert isinstance(model, SemanticSegmentor)
    head = model.sem_seg_head
    assert type(head) is PerPixelBaselineHead
    assert head.predictor.weight.shape == (8, head.pixel_decoder.mask_dim, 1, 1)
    batch = _batch()
    losses = model(batch)
    assert list(losses) == ["loss_sem_seg"]

    with torch.no_grad():
        images = torch.stack([(b["image"] - model.pixel_mean) / model.pixel_std for b in batch])
        mask_features, _, _ = head.pixel_decoder.forward_features(model.backbone(images))
        logits = F.interpolate(head.predictor(mask_features), size=(H, W), mode="bilinear", align_corners=False)
        expected = 2.5 * F.cross_entropy(logits, torch.stack([b["sem_seg"] for b in batch]), ignore_index=255)
    torch.testing.assert_close(losses["loss_sem_seg"].detach(), expected)

    losses["loss_sem_seg"].backward()
    assert head.predictor.weight.grad.abs().sum() > 0


def test_baseline_inference_returns_logits_at_the_input_size():
    model = _model(BASELINE).eval()
    with torch.no_grad():
        results = model(_batch(with_labels=False))
        head_logits, _ = model.sem_seg_head(model.backbone(
            torch.stack([(b["image"] - model.pixel_mean) / model.pixel_std for b in _batch(False)])
        ))
    assert [r["sem_seg"].shape for r in results] == [(8, H, W)] * 2
    assert head_logits.shape == (2, 8, H, W)
    torch.testing.assert_close(results[1]["sem_seg"], head_logits[1])


@pytest.mark.parametrize("deep_supervision", [True, False])
def test_baseline_plus_losses(deep_supervision):
    model = _model(PLUS, ["MODEL.MASK_FORMER.DEEP_SUPERVISION", str(deep_supervision),
                          "MODEL.MASK_FORMER.DEC_LAYERS", "3"])
    head = model.sem_seg_head
    assert type(head) is PerPixelBaselinePlusHead
    # one query per class, no class prediction: the decoder's masks are the class logits
    assert not hasattr(head.predictor, "class_embed")
    assert head.predictor.query_embed.weight.shape[0] == 8
    losses = model(_batch())
    aux = ["loss_sem_seg_0", "loss_sem_seg_1"] if deep_supervision else []
    assert sorted(losses) == sorted(["loss_sem_seg"] + aux)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert head.predictor.query_embed.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        results = model(_batch(with_labels=False))
    assert [r["sem_seg"].shape for r in results] == [(8, H, W)] * 2


def test_baseline_plus_needs_one_query_per_class():
    with pytest.raises(ValueError, match="NUM_OBJECT_QUERIES \\(20\\) must equal MODEL.SEM_SEG_HEAD.NUM_CLASSES \\(8\\)"):
        _model(PLUS, ["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "20"])
