import itertools

import pytest
import torch
import torch.nn.functional as F

from mask2former.modeling.matcher import (
    HungarianMatcher,
    batch_dice_loss,
    batch_sigmoid_ce_loss,
)

torch.set_num_threads(1)


def _random_case(gen, bs, num_queries, num_targets, num_classes=5, hw=(16, 16), tgt_hw=(32, 32)):
    outputs = {
        "pred_logits": torch.randn(bs, num_queries, num_classes + 1, generator=gen) * 2,
        "pred_masks": torch.randn(bs, num_queries, *hw, generator=gen) * 3,
    }
    targets = []
    for n in num_targets:
        targets.append(
            {
                "labels": torch.randint(0, num_classes, (n,), generator=gen),
                "masks": torch.rand(n, *tgt_hw, generator=gen) > 0.5,
            }
        )
    return outputs, targets


def _brute_force_min(C):
    """Minimum total cost over all injective assignments of the smaller side into the larger."""
    Q, N = C.shape
    best = float("inf")
    if N <= Q:
        for queries in itertools.permutations(range(Q), N):
            best = min(best, sum(C[q, j].item() for j, q in enumerate(queries)))
    else:
        for tgts in itertools.permutations(range(N), Q):
            best = min(best, sum(C[q, j].item() for q, j in enumerate(tgts)))
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_queries,num_targets", [(6, (4, 2)), (5, (3, 1)), (3, (4, 3)), (2, (1, 2))])
def test_assignment_is_optimal(seed, num_queries, num_targets):
    gen = torch.Generator().manual_seed(seed)
    outputs, targets = _random_case(gen, len(num_targets), num_queries, num_targets)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=50)

    torch.manual_seed(1000 + seed)
    indices = matcher(outputs, targets)

    # Re-draw the same points (one torch.rand per image with targets, in order).
    torch.manual_seed(1000 + seed)
    for b, (i, j) in enumerate(indices):
        point_coords = torch.rand(1, matcher.num_points, 2)
        C = matcher.compute_cost_matrix(
            outputs["pred_logits"][b],
            outputs["pred_masks"][b],
            targets[b]["labels"],
            targets[b]["masks"],
            point_coords,
        )
        assert C.shape == (num_queries, num_targets[b])
        assert i.dtype == torch.int64 and j.dtype == torch.int64
        assert len(i) == len(j) == min(num_queries, num_targets[b])
        assert len(set(i.tolist())) == len(i)  # each query matched at most once
        assert len(set(j.tolist())) == len(j)  # each target matched at most once
        total = C[i, j].sum().item()
        assert total == pytest.approx(_brute_force_min(C), abs=1e-4)


def test_cost_matrix_matches_definition():
    gen = torch.Generator().manual_seed(0)
    outputs, targets = _random_case(gen, 1, 4, (3,))
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=3.0, num_points=20)
    pc = torch.rand(1, 20, 2, generator=gen)
    C = matcher.compute_cost_matrix(
        outputs["pred_logits"][0], outputs["pred_masks"][0], targets[0]["labels"],
        targets[0]["masks"], pc,
    )
    prob = outputs["pred_logits"][0].softmax(-1)
    # Points sampled by grid_sample directly (grid in [-1, 1]) for an independent path.
    grid = (2 * pc - 1)[:, :, None]  # (1, P, 1, 2)
    out = F.grid_sample(outputs["pred_masks"][0][:, None], grid.expand(4, -1, -1, -1), align_corners=False)
    tgt = F.grid_sample(targets[0]["masks"][:, None].float(), grid.expand(3, -1, -1, -1), align_corners=False)
    out, tgt = out.flatten(1), tgt.flatten(1)
    for q in range(4):
        for n in range(3):
            bce = F.binary_cross_entropy_with_logits(out[q], tgt[n])
            s = out[q].sigmoid()
            dice = 1 - (2 * (s * tgt[n]).sum() + 1) / (s.sum() + tgt[n].sum() + 1)
            expected = 5.0 * bce + 2.0 * -prob[q, targets[0]["labels"][n]] + 3.0 * dice
            assert C[q, n].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-5)


def test_batch_losses_vs_naive_loop():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 37, generator=gen, dtype=torch.float64) * 4
    t = (torch.rand(3, 37, generator=gen, dtype=torch.float64) > 0.4).double()
    t[1] = torch.rand(37, generator=gen, dtype=torch.float64)  # soft targets are allowed too
    ce = batch_sigmoid_ce_loss(x, t)
    dice = batch_dice_loss(x, t)
    assert ce.shape == dice.shape == (5, 3)
    for q in range(5):
        for n in range(3):
            p = x[q].sigmoid()
            naive_ce = -(t[n] * torch.log(p) + (1 - t[n]) * torch.log(1 - p)).mean()
            naive_dice = 1 - (2 * (p * t[n]).sum() + 1) / (p.sum() + t[n].sum() + 1)
            assert ce[q, n].item() == pytest.approx(naive_ce.item(), rel=1e-10)
            assert dice[q, n].item() == pytest.approx(naive_dice.item(), rel=1e-10)


def test_recovers_obvious_permutation():
    gen = torch.Generator().manual_seed(7)
    masks = torch.rand(3, 32, 32, generator=gen) > 0.5
    labels = torch.tensor([0, 2, 1])
    perm = [4, 0, 2]  # target n is predicted by query perm[n]
    pred_masks = torch.full((1, 6, 32, 32), -10.0)
    pred_logits = torch.zeros(1, 6, 4)
    pred_logits[..., -1] = 5.0
    for n, q in enumerate(perm):
        pred_masks[0, q] = masks[n].float() * 20 - 10
        pred_logits[0, q] = 0.0
        pred_logits[0, q, labels[n]] = 10.0
    matcher = HungarianMatcher(1, 1, 1, num_points=200)
    (i, j), = matcher({"pred_logits": pred_logits, "pred_masks": pred_masks},
                      [{"labels": labels, "masks": masks}])
    assert dict(zip(j.tolist(), i.tolist())) == {0: 4, 1: 0, 2: 2}


def test_no_targets():
    gen = torch.Generator().manual_seed(0)
    outputs, targets = _random_case(gen, 3, 4, (0, 2, 0))
    indices = HungarianMatcher(num_points=10)(outputs, targets)
    assert len(indices) == 3
    for b in (0, 2):
        i, j = indices[b]
        assert i.numel() == 0 and j.numel() == 0
        assert i.dtype == torch.int64 and j.dtype == torch.int64
    assert len(indices[1][0]) == 2


def test_dense_costs_without_points():
    """num_points <= 0 compares at every pixel of the prediction grid."""
    gen = torch.Generator().manual_seed(1)
    outputs, targets = _random_case(gen, 1, 4, (2,), hw=(8, 8), tgt_hw=(8, 8))
    matcher = HungarianMatcher(cost_class=0, cost_mask=1, cost_dice=0, num_points=0)
    C = matcher.compute_cost_matrix(
        outputs["pred_logits"][0], outputs["pred_masks"][0], targets[0]["labels"],
        targets[0]["masks"], None,
    )
    expected = batch_sigmoid_ce_loss(outputs["pred_masks"][0].flatten(1), targets[0]["masks"].flatten(1).float())
    assert torch.allclose(C, expected, atol=1e-6)
    (i, j), = matcher(outputs, targets)
    assert len(i) == 2


def test_non_finite_cost_names_image():
    gen = torch.Generator().manual_seed(0)
    outputs, targets = _random_case(gen, 2, 4, (2, 2))
    outputs["pred_masks"][1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="image 1"):
        HungarianMatcher(num_points=16)(outputs, targets)


def test_bad_labels_and_weights():
    gen = torch.Generator().manual_seed(0)
    outputs, targets = _random_case(gen, 1, 4, (2,), num_classes=3)
    targets[0]["labels"] = torch.tensor([0, 3])  # 3 is the no-object index
    with pytest.raises(ValueError, match="image 0"):
        HungarianMatcher(num_points=16)(outputs, targets)
    with pytest.raises(AssertionError):
        HungarianMatcher(0, 0, 0)


def test_repr_lists_weights():
    r = repr(HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=3.0, num_points=12544))
    for s in ("cost_class: 2.0", "cost_mask: 5.0", "cost_dice: 3.0", "num_points: 12544"):
        assert s in r
