"""The matcher and criterion on mask tubes: optimal matching, points shared by the frames of a
video, losses summed over frames, and equality with the image ones for one frame."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from mask2former.modeling import criterion as criterion_module
from mask2former.modeling.criterion import SetCriterion
from mask2former.modeling.matcher import HungarianMatcher
from mask2former_video.modeling.criterion import VideoSetCriterion
from mask2former_video.modeling.matcher import VideoHungarianMatcher

WEIGHTS = {"cost_class": 2.0, "cost_mask": 5.0, "cost_dice": 5.0}


def _tube_case(gen, num_queries, num_targets, t_len, num_classes=4, hw=(8, 10), tgt_hw=(16, 20)):
    outputs = {
        "pred_logits": torch.randn(len(num_targets), num_queries, num_classes + 1, generator=gen) * 2,
        "pred_masks": torch.randn(len(num_targets), num_queries, t_len, *hw, generator=gen) * 3,
    }
    targets = [
        {
            "labels": torch.randint(0, num_classes, (n,), generator=gen),
            "masks": torch.rand(n, t_len, *tgt_hw, generator=gen) > 0.5,
        }
        for n in num_targets
    ]
    return outputs, targets


def _sample(masks: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(M, T, H, W) at (P, 2) points in [0, 1]^2 (x, y), every frame at the same points -> (M, T*P)."""
    grid = (2 * points - 1)[None, None].expand(masks.shape[0], 1, -1, -1)
    values = F.grid_sample(masks.float(), grid, mode="bilinear", align_corners=False)  # (M, T, 1, P)
    return values.flatten(1)


def _direct_cost(logits, pred, labels, tgt, points):
    """(Q, N) cost of video_model.md's matcher, computed pair by pair from the definitions."""
    prob = logits.softmax(-1)
    out, target = _sample(pred, points), _sample(tgt, points)
    cost = torch.zeros(pred.shape[0], tgt.shape[0])
    for q, n in itertools.product(range(pred.shape[0]), range(tgt.shape[0])):
        bce = F.binary_cross_entropy_with_logits(out[q], target[n])
        s = out[q].sigmoid()
        dice = 1 - (2 * (s * target[n]).sum() + 1) / (s.sum() + target[n].sum() + 1)
        cost[q, n] = -2.0 * prob[q, labels[n]] + 5.0 * bce + 5.0 * dice
    return cost


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("num_queries,num_targets,t_len", [(5, (3, 2), 3), (3, (4,), 2), (4, (1, 4), 5)])
def test_tube_assignment_is_optimal(seed, num_queries, num_targets, t_len):
    gen = torch.Generator().manual_seed(seed)
    outputs, targets = _tube_case(gen, num_queries, num_targets, t_len)
    matcher = VideoHungarianMatcher(**WEIGHTS, num_points=40)
    torch.manual_seed(100 + seed)
    indices = matcher(outputs, targets)
    torch.manual_seed(100 + seed)  # the same points: one draw of (1, P, 2) per video
    for b, (rows, cols) in enumerate(indices):
        points = torch.rand(1, 40, 2)[0]
        cost = _direct_cost(
            outputs["pred_logits"][b], outputs["pred_masks"][b], targets[b]["labels"],
            targets[b]["masks"], points,
        )
        assert len(rows) == min(num_queries, num_targets[b])
        ours = cost[rows, cols].sum().item()
        q, n = cost.shape
        if n <= q:
            best = min(sum(cost[p[j], j] for j in range(n)) for p in itertools.permutations(range(q), n))
        else:
            best = min(sum(cost[i, p[i]] for i in range(q)) for p in itertools.permutations(range(n), q))
        assert ours == pytest.approx(float(best), abs=1e-4)


def test_cost_matrix_samples_every_frame_at_the_same_points():
    gen = torch.Generator().manual_seed(3)
    outputs, targets = _tube_case(gen, 4, (3,), 3)
    matcher = VideoHungarianMatcher(**WEIGHTS, num_points=30)
    points = torch.rand(1, 30, 2, generator=gen)
    ours = matcher.compute_cost_matrix(
        outputs["pred_logits"][0], outputs["pred_masks"][0], targets[0]["labels"],
        targets[0]["masks"], points,
    )
    direct = _direct_cost(
        outputs["pred_logits"][0], outputs["pred_masks"][0], targets[0]["labels"],
        targets[0]["masks"], points[0],
    )
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)


def _single_frame(outputs, targets):
    """The same case as images: the (length 1) time axis dropped."""
    image_outputs = {"pred_logits": outputs["pred_logits"], "pred_masks": outputs["pred_masks"][:, :, 0]}
    image_targets = [{"labels": t["labels"], "masks": t["masks"][:, 0]} for t in targets]
    return image_outputs, image_targets


def test_one_frame_matcher_equals_the_image_matcher():
    gen = torch.Generator().manual_seed(5)
    outputs, targets = _tube_case(gen, 6, (3, 0, 5), 1)
    image_outputs, image_targets = _single_frame(outputs, targets)
    torch.manual_seed(7)
    video = VideoHungarianMatcher(**WEIGHTS, num_points=50)(outputs, targets)
    torch.manual_seed(7)
    image = HungarianMatcher(**WEIGHTS, num_points=50)(image_outputs, image_targets)
    for (vi, vj), (ii, ij) in zip(video, image):
        assert torch.equal(vi, ii) and torch.equal(vj, ij)


def _criterion(cls, matcher_cls, num_classes=4, num_points=64):
    weight_dict = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    return cls(
        num_classes, matcher=matcher_cls(**WEIGHTS, num_points=num_points), weight_dict=weight_dict,
        eos_coef=0.1, losses=["labels", "masks"], num_points=num_points, oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )


def test_one_frame_criterion_equals_the_image_criterion():
    gen = torch.Generator().manual_seed(11)
    outputs, targets = _tube_case(gen, 6, (3, 2), 1)
    outputs["aux_outputs"] = [
        {"pred_logits": outputs["pred_logits"] * 0.5, "pred_masks": outputs["pred_masks"] - 1}
    ]
    image_outputs, image_targets = _single_frame(outputs, targets)
    image_outputs["aux_outputs"] = [_single_frame(outputs["aux_outputs"][0], [])[0]]
    torch.manual_seed(13)
    video = _criterion(VideoSetCriterion, VideoHungarianMatcher)(outputs, targets)
    torch.manual_seed(13)
    image = _criterion(SetCriterion, HungarianMatcher)(image_outputs, image_targets)
    assert sorted(video) == sorted(image)
    for name in image:
        assert torch.equal(video[name], image[name]), name


class FixedMatcher(torch.nn.Module):
    def __init__(self, indices):
        super().__init__()
        self.indices = [(torch.as_tensor(i), torch.as_tensor(j)) for i, j in indices]

    def forward(self, outputs, targets):
        return self.indices


def test_tube_losses_sum_over_frames_divided_by_instances(monkeypatch):
    """Points forced onto pixel centres: the point losses are the dense per-pixel ones, each of
    the R*T frame masks sampled alone, summed over frames and divided by the instances."""
    size, t_len = 6, 3
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.stack([(xs.flatten() + 0.5) / size, (ys.flatten() + 0.5) / size], -1)
    sampled = []

    def fake_sampler(coarse_logits, uncertainty_func, num_points, oversample, importance):
        sampled.append(coarse_logits.shape)
        return centres[None].expand(coarse_logits.shape[0], -1, -1)

    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness", fake_sampler)
    gen = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 4, t_len, size, size, generator=gen) * 3
    targets = [
        {"labels": torch.tensor([0, 1]), "masks": torch.rand(2, t_len, size, size, generator=gen) > 0.5},
        {"labels": torch.tensor([2]), "masks": torch.rand(1, t_len, size, size, generator=gen) > 0.5},
    ]
    indices = [([2, 0], [1, 0]), ([3], [0])]
    criterion = _criterion(VideoSetCriterion, VideoHungarianMatcher, num_points=size * size)
    criterion.matcher = FixedMatcher(indices)
    losses = criterion({"pred_logits": torch.zeros(2, 4, 5), "pred_masks": pred}, targets)
    assert sampled == [(3 * t_len, 1, size, size)]

    # the 3 matched tubes as 3*T dense frame masks
    x = torch.stack([pred[0, 2], pred[0, 0], pred[1, 3]]).flatten(0, 1).flatten(1)
    t = torch.stack([targets[0]["masks"][1], targets[0]["masks"][0], targets[1]["masks"][0]])
    t = t.flatten(0, 1).flatten(1).float()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(1).sum()
    p = x.sigmoid()
    dice = (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum()
    torch.testing.assert_close(losses["loss_mask"], bce / 3, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["loss_dice"], dice / 3, rtol=1e-5, atol=1e-6)


def test_mismatched_time_axes_fail_clearly():
    gen = torch.Generator().manual_seed(0)
    outputs, targets = _tube_case(gen, 3, (2,), 3)
    targets[0]["masks"] = targets[0]["masks"][:, :2]
    with pytest.raises(ValueError, match="leading \\(time\\) axes"):
        VideoHungarianMatcher(**WEIGHTS, num_points=10)(outputs, targets)
    targets[0]["masks"] = targets[0]["masks"][:, 0]
    with pytest.raises(ValueError, match="leading \\(time\\) axes"):
        _criterion(VideoSetCriterion, VideoHungarianMatcher).loss_masks(
            outputs, targets, [(torch.tensor([0]), torch.tensor([0]))], 1.0
        )
