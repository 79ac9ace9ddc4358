"""The criterion's and the matcher's faster paths give the plain computation's numbers: the same
random points, the same matching, the same losses and gradients (but for float rounding)."""
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from detectron2.projects.point_rend import point_features
from mask2former.modeling.criterion import PointMaskLosses, SetCriterion, calculate_uncertainty
from mask2former.modeling.matcher import HungarianMatcher
from mask2former.modeling.point_sampling import (
    bilinear_corners,
    get_uncertain_point_coords_with_randomness,
    sample_table,
)
from mask2former_video.modeling import VideoHungarianMatcher, VideoSetCriterion

torch.set_num_threads(1)

COSTS = {"cost_class": 2.0, "cost_mask": 5.0, "cost_dice": 5.0}
WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
NUM_CLASSES, NUM_POINTS = 5, 120


def _plain_match(logits, masks, labels, target_masks, num_points):
    """The reference matcher for one image: grid_sample at one rand(1, P, 2) draw, the pairwise
    BCE as two products of log-sigmoids, dice, Hungarian assignment."""
    if len(labels) == 0:
        return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
    points = torch.rand(1, num_points, 2)
    q, n = masks.shape[0], target_masks.shape[0]
    x = point_features.point_sample(masks.flatten(0, -3)[None], points, align_corners=False)[0].reshape(q, -1)
    t = point_features.point_sample(target_masks.flatten(0, -3)[None].float(), points, align_corners=False)[0]
    t = t.reshape(n, -1)
    bce = (-F.logsigmoid(x)) @ t.T + (x - F.logsigmoid(x)) @ (1 - t).T
    p = x.sigmoid()
    dice = 1 - (2 * p @ t.T + 1) / (p.sum(1)[:, None] + t.sum(1)[None] + 1)
    cost = COSTS["cost_mask"] * bce / x.shape[1] - COSTS["cost_class"] * logits.softmax(-1)[:, labels]
    cost = cost + COSTS["cost_dice"] * dice
    i, j = linear_sum_assignment(cost.numpy())
    return torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)


def _plain_losses(output, targets, indices, num_masks, num_points):
    """The reference losses of one output: detectron2's importance sampling and point_sample,
    BCE and dice through autograd."""
    weight = torch.ones(NUM_CLASSES + 1)
    weight[-1] = 0.1
    classes = torch.full(output["pred_logits"].shape[:2], NUM_CLASSES)
    for b, (i, j) in enumerate(indices):
        classes[b, i] = targets[b]["labels"][j]
    loss_ce = F.cross_entropy(output["pred_logits"].transpose(1, 2), classes, weight)
    src = torch.cat([output["pred_masks"][b, i] for b, (i, _) in enumerate(indices)]).flatten(0, -3)
    if src.shape[0] == 0:
        zero = output["pred_masks"].sum() * 0.0
        return {"loss_ce": loss_ce, "loss_mask": zero, "loss_dice": zero}
    height = max(t["masks"].shape[-2] for t in targets)
    width = max(t["masks"].shape[-1] for t in targets)
    tgt = torch.cat([
        F.pad(targets[b]["masks"][j].float(), (0, width - targets[b]["masks"].shape[-1], 0,
                                               height - targets[b]["masks"].shape[-2]))
        for b, (_, j) in enumerate(indices)
    ]).flatten(0, -3)
    with torch.no_grad():
        points = point_features.get_uncertain_point_coords_with_randomness(
            src[:, None], calculate_uncertainty, num_points, 3.0, 0.75
        )
        labels = point_features.point_sample(tgt[:, None], points, align_corners=False)[:, 0]
    x = point_features.point_sample(src[:, None], points, align_corners=False)[:, 0]
    bce = F.binary_cross_entropy_with_logits(x, labels, reduction="none").mean(1).sum() / num_masks
    p = x.sigmoid()
    dice = 1 - (2 * (p * labels).sum(1) + 1) / (p.sum(1) + labels.sum(1) + 1)
    return {"loss_ce": loss_ce, "loss_mask": bce, "loss_dice": dice.sum() / num_masks}


def _case(seed, num_queries, num_targets, frames=None, num_outputs=3, sizes=((24, 24), (24, 24))):
    g = torch.Generator().manual_seed(seed)
    time_axis = () if frames is None else (frames,)

    def output():
        return {
            "pred_logits": torch.randn(len(num_targets), num_queries, NUM_CLASSES + 1, generator=g).requires_grad_(),
            "pred_masks": (torch.randn(len(num_targets), num_queries, *time_axis, 12, 12, generator=g) * 3)
            .requires_grad_(),
        }

    outputs = output()
    outputs["aux_outputs"] = [output() for _ in range(num_outputs - 1)]
    targets = [
        {"labels": torch.randint(0, NUM_CLASSES, (n,), generator=g),
         "masks": torch.rand(n, *time_axis, *size, generator=g) > 0.6}
        for n, size in zip(num_targets, sizes)
    ]
    return outputs, targets


def _plain_forward(outputs, targets, seed):
    torch.manual_seed(seed)
    num_masks = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
    losses, matchings = {}, []
    for k, output in enumerate([outputs] + outputs["aux_outputs"]):
        indices = [
            _plain_match(output["pred_logits"][b].detach(), output["pred_masks"][b].detach(), t["labels"],
                         t["masks"], NUM_POINTS)
            for b, t in enumerate(targets)
        ]
        matchings.append(indices)
        suffix = "" if k == 0 else f"_{k - 1}"
        for name, value in _plain_losses(output, targets, indices, num_masks, NUM_POINTS).items():
            losses[name + suffix] = value
    return losses, matchings


def _grads(outputs, losses):
    leaves = [outputs] + outputs["aux_outputs"]
    for o in leaves:
        for v in o.values() if isinstance(o, dict) else ():
            if isinstance(v, torch.Tensor):
                v.grad = None
    sum(WEIGHTS[name.split("_")[0] + "_" + name.split("_")[1]] * v for name, v in losses.items()).backward()
    return [o[k].grad.clone() for o in leaves for k in ("pred_logits", "pred_masks")]


@pytest.mark.parametrize(
    "seed,num_queries,num_targets,frames,sizes",
    [
        (0, 10, (3, 5), None, ((24, 24), (24, 24))),  # images
        (1, 10, (4, 0), None, ((24, 24), (24, 24))),  # an image without targets
        (2, 4, (6, 2), None, ((24, 24), (24, 24))),  # more targets than queries
        (3, 6, (2, 3), 2, ((24, 24), (24, 24))),  # videos (T = 2)
        (4, 8, (3, 2), None, ((24, 16), (20, 24))),  # targets of different sizes (padded)
    ],
)
def test_criterion_equals_plain_computation(seed, num_queries, num_targets, frames, sizes):
    outputs, targets = _case(seed, num_queries, num_targets, frames, sizes=sizes)
    video = frames is not None
    matcher = (VideoHungarianMatcher if video else HungarianMatcher)(**COSTS, num_points=NUM_POINTS)
    criterion = (VideoSetCriterion if video else SetCriterion)(
        NUM_CLASSES, matcher, WEIGHTS, eos_coef=0.1, losses=["labels", "masks"], num_points=NUM_POINTS,
        oversample_ratio=3.0, importance_sample_ratio=0.75,
    )
    expected, expected_matchings = _plain_forward(outputs, targets, seed)
    expected_grads = _grads(outputs, expected)

    matchings, match = [], matcher.forward
    matcher.forward = lambda o, t: matchings.append(match(o, t)) or matchings[-1]
    torch.manual_seed(seed)
    losses = criterion(outputs, targets)
    assert len(matchings) == len(expected_matchings)
    for ours, plain in zip(matchings, expected_matchings):
        for (i, j), (pi, pj) in zip(ours, plain):
            assert torch.equal(i, pi) and torch.equal(j, pj)
    assert set(losses) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-6, msg=name)
    for ours, plain in zip(_grads(outputs, losses), expected_grads):
        torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-6 * plain.abs().max().item())


def test_uncertain_points_are_detectron2s_points():
    """Same random draws, same chosen points (as a set per mask; their order is free), and the
    generator left in the same state."""
    logits = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 3
    torch.manual_seed(5)
    ours = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 100, 3.0, 0.75)
    after_ours = torch.rand(3)
    torch.manual_seed(5)
    ref = point_features.get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 100, 3.0, 0.75)
    after_ref = torch.rand(3)
    assert ours.shape == ref.shape == (4, 100, 2)
    assert torch.equal(after_ours, after_ref)
    assert torch.equal(ours[:, 75:], ref[:, 75:])  # the uniform random points
    for a, b in zip(ours[:, :75], ref[:, :75]):
        assert torch.equal(a[a[:, 0].argsort()], b[b[:, 0].argsort()])


def _point_case(dtype, rows=3, size=(5, 6), points=7):
    g = torch.Generator().manual_seed(0)
    masks = (torch.randn(rows, *size, generator=g, dtype=dtype) * 2).requires_grad_()
    coords = torch.rand(rows, points, 2, generator=g, dtype=dtype)
    labels = torch.rand(rows, points, generator=g, dtype=dtype)
    return masks, coords, labels


def test_point_mask_losses_gradcheck():
    masks, coords, labels = _point_case(torch.float64)
    assert torch.autograd.gradcheck(lambda m: PointMaskLosses.apply(m, coords, labels, 2.0), (masks,))


def test_point_mask_losses_equal_plain_path():
    masks, coords, labels = _point_case(torch.float32, rows=6, size=(24, 24), points=500)
    labels = (labels > 0.5).float()
    bce, dice = PointMaskLosses.apply(masks, coords, labels, 4.0)
    (3 * bce + 7 * dice).backward()
    fused_grad, masks.grad = masks.grad, None
    x = point_features.point_sample(masks[:, None], coords, align_corners=False)[:, 0]
    plain_bce = F.binary_cross_entropy_with_logits(x, labels, reduction="none").mean(1).sum() / 4.0
    p = x.sigmoid()
    plain_dice = (1 - (2 * (p * labels).sum(1) + 1) / (p.sum(1) + labels.sum(1) + 1)).sum() / 4.0
    (3 * plain_bce + 7 * plain_dice).backward()
    assert bce.item() == plain_bce.item() and dice.item() == plain_dice.item()  # the same ops
    torch.testing.assert_close(fused_grad, masks.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("size", [(12, 12), (7, 11), (20, 9)])
def test_table_sampling_equals_grid_sample(size):
    """The matcher's embedding_bag sampling gives grid_sample's values, border points included."""
    g = torch.Generator().manual_seed(1)
    masks = torch.randn(1, 30, *size, generator=g) * 3
    points = torch.rand(1, 400, 2, generator=g)
    points[0, :4] = torch.tensor([[0.0, 0.0], [0.9999, 0.9999], [0.0, 0.9999], [0.5, 0.0]])
    expected = point_features.point_sample(masks, points, align_corners=False)[0]  # (30, P)
    ours = sample_table(masks[0].flatten(1).t().contiguous(), bilinear_corners(points[0], size))
    torch.testing.assert_close(ours.t(), expected, rtol=1e-6, atol=1e-6)
