"""Semantic, panoptic and instance inference against straightforward per-query loops, through
the plain post-processor with every resize the identity (output size = mask size)."""
import pytest
import torch
from torch.nn import functional as F

from mask2former.modeling.postprocessing import (
    InferenceSettings,
    PlainPostProcessor,
    argmax_over_first_dim,
)


def _plain(mask_cls, mask_pred, output, is_thing=None, thresholds=(0.8, 0.8), topk=100):
    """The plain post-processor's ``output`` of logits already at the output size."""
    settings = InferenceSettings(
        output == "sem_seg", output == "panoptic_seg", output == "instances", *thresholds, topk
    )
    postprocessor = PlainPostProcessor(settings)
    size = tuple(mask_pred.shape[-2:])
    return postprocessor(mask_cls, mask_pred, size, size, size, is_thing)[output]


def _naive_panoptic(mask_cls, mask_pred, is_thing, object_mask_threshold, overlap_threshold):
    """The per-query loop of the paper's panoptic inference, written plainly."""
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    mask_pred = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]
    panoptic_seg = torch.zeros(mask_pred.shape[-2:], dtype=torch.int32)
    segments_info = []
    current_segment_id = 0
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info
    cur_mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    stuff_memory = {}
    for k in range(cur_classes.shape[0]):
        pred_class = cur_classes[k].item()
        isthing = bool(is_thing[pred_class])
        mask_area = (cur_mask_ids == k).sum().item()
        original_area = (cur_masks[k] >= 0.5).sum().item()
        mask = (cur_mask_ids == k) & (cur_masks[k] >= 0.5)
        if mask_area > 0 and original_area > 0 and mask.sum().item() > 0:
            if mask_area / original_area < overlap_threshold:
                continue
            if not isthing:
                if pred_class in stuff_memory:
                    panoptic_seg[mask] = stuff_memory[pred_class]
                    continue
                stuff_memory[pred_class] = current_segment_id + 1
            current_segment_id += 1
            panoptic_seg[mask] = current_segment_id
            segments_info.append({"id": current_segment_id, "isthing": isthing, "category_id": int(pred_class)})
    return panoptic_seg, segments_info


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresholds", [(0.0, 0.0), (0.3, 0.8), (0.8, 0.8)])
def test_panoptic_inference_matches_the_per_query_loop(seed, thresholds):
    g = torch.Generator().manual_seed(seed)
    q, k, h, w = 12, 6, 23, 31
    # Few classes so that stuff segments repeat and get merged.
    mask_cls = torch.randn(q, k + 1, generator=g) * 3
    mask_pred = torch.randn(q, h, w, generator=g) * 4
    is_thing = torch.tensor([True, True, True, False, False, False])
    ours = _plain(mask_cls, mask_pred, "panoptic_seg", is_thing, thresholds)
    naive = _naive_panoptic(mask_cls, mask_pred, is_thing, *thresholds)
    assert torch.equal(ours[0], naive[0])
    assert ours[1] == naive[1]


def test_panoptic_inference_with_no_confident_query():
    mask_cls = torch.zeros(4, 3)
    mask_cls[:, -1] = 10  # everything is "no object"
    seg, info = _plain(mask_cls, torch.randn(4, 8, 8), "panoptic_seg", torch.tensor([True, False]), (0.5, 0.8))
    assert info == [] and seg.shape == (8, 8) and (seg == 0).all()


def test_semantic_inference_is_the_probability_weighted_sum():
    g = torch.Generator().manual_seed(0)
    mask_cls, mask_pred = torch.randn(5, 4, generator=g), torch.randn(5, 6, 7, generator=g)
    ours = _plain(mask_cls, mask_pred, "sem_seg")
    probs = mask_cls.softmax(-1)[:, :-1]
    expected = sum(probs[q][:, None, None] * mask_pred[q].sigmoid()[None] for q in range(5))
    assert torch.allclose(ours, expected, atol=1e-6)


def test_instance_inference_topk_and_scores():
    g = torch.Generator().manual_seed(0)
    q, k = 7, 4
    mask_cls, mask_pred = torch.randn(q, k + 1, generator=g), torch.randn(q, 9, 11, generator=g)
    inst = _plain(mask_cls, mask_pred, "instances", topk=5)
    probs = mask_cls.softmax(-1)[:, :-1]
    pairs = sorted(((probs[i, c].item(), i, c) for i in range(q) for c in range(k)), reverse=True)[:5]
    got = sorted(zip(inst.pred_classes.tolist(), inst.scores.tolist()))
    expected = []
    for p, i, c in pairs:
        binary = mask_pred[i] > 0
        mask_score = (mask_pred[i].sigmoid() * binary).sum() / (binary.sum() + 1e-6)
        expected.append((c, p * mask_score.item()))
    expected.sort()
    assert [c for c, _ in got] == [c for c, _ in expected]
    assert torch.allclose(torch.tensor([s for _, s in got]), torch.tensor([s for _, s in expected]), atol=1e-6)
    assert inst.pred_masks.shape == (5, 9, 11)
    # More requested than (query, class) pairs exist: all of them.
    assert len(_plain(mask_cls, mask_pred, "instances", topk=1000)) == q * k


def test_instance_inference_thing_only_drops_stuff():
    g = torch.Generator().manual_seed(1)
    mask_cls, mask_pred = torch.randn(6, 5, generator=g), torch.randn(6, 5, 5, generator=g)
    thing = torch.tensor([True, False, True, False])
    inst = _plain(mask_cls, mask_pred, "instances", thing, topk=24)
    assert len(inst) == 12 and thing[inst.pred_classes].all()


def test_argmax_over_first_dim_equals_argmax_with_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (9, 13, 17), generator=g).float()  # many ties: the first max wins
    assert torch.equal(argmax_over_first_dim(x), x.argmax(0))
    assert torch.equal(argmax_over_first_dim(x[:1]), torch.zeros(13, 17, dtype=torch.long))
