"""Optimizer / LR scheduler builders: parameter groups, clipping, schedules."""

import math

import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.projects.deeplab import add_deeplab_config

from mask2former.config import add_maskformer2_config
from mask2former.solver import build_lr_scheduler, build_optimizer


def _cfg(**solver):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    for k, v in solver.items():
        if "." in k:
            node, key = k.split(".")
            setattr(getattr(cfg.SOLVER, node), key, v)
        else:
            setattr(cfg.SOLVER, k, v)
    return cfg


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros(7, 2))
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 4)


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.frozen_bn = FrozenBatchNorm2d(4)
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4))
        self.block = _Block()
        self.stem_frozen = nn.Conv2d(3, 3, 1)
        self.stem_frozen.requires_grad_(False)


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.query_feat = nn.Embedding(5, 4)
        self.query_embed = nn.Embedding(5, 4)
        self.level_embed = nn.Embedding(3, 4)
        self.gn = nn.GroupNorm(2, 4)
        self.decoder_norm = nn.LayerNorm(4)
        self.class_embed = nn.Linear(4, 3)
        self.mask_embed = nn.Linear(4, 4)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Backbone()
        self.sem_seg_head = _Head()
        # tied: the same Parameter is reachable from two modules
        self.sem_seg_head.tied = nn.Linear(4, 4)
        self.sem_seg_head.tied.weight = self.sem_seg_head.mask_embed.weight


def _hparams_by_name(model, optimizer):
    by_id = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in by_id, "parameter listed twice"
            by_id[id(p)] = (group["lr"], group["weight_decay"])
    return {name: by_id.get(id(p)) for name, p in model.named_parameters()}, by_id


def test_param_groups_lr_and_weight_decay():
    model = _Toy()
    opt = build_optimizer(_cfg(OPTIMIZER="ADAMW"), model)
    assert isinstance(opt, torch.optim.AdamW)
    hp, by_id = _hparams_by_name(model, opt)
    lr, bb_lr = 1e-3, 1e-4

    # backbone: lr multiplier; norms / embeddings: no weight decay
    assert hp["backbone.conv.weight"] == pytest.approx((bb_lr, 0.05))
    assert hp["backbone.conv.bias"] == pytest.approx((bb_lr, 0.05))
    assert hp["backbone.bn.weight"] == pytest.approx((bb_lr, 0.0))
    assert hp["backbone.absolute_pos_embed"] == pytest.approx((bb_lr, 0.0))
    assert hp["backbone.block.relative_position_bias_table"] == pytest.approx((bb_lr, 0.0))
    assert hp["backbone.block.norm.weight"] == pytest.approx((bb_lr, 0.0))
    assert hp["backbone.block.fc.weight"] == pytest.approx((bb_lr, 0.05))
    # frozen parameters are left out
    assert hp["backbone.stem_frozen.weight"] is None
    # outside the backbone: base lr
    for name in ("query_feat", "query_embed", "level_embed"):
        assert hp[f"sem_seg_head.{name}.weight"] == pytest.approx((lr, 0.0))
    assert hp["sem_seg_head.gn.weight"] == pytest.approx((lr, 0.0))
    assert hp["sem_seg_head.decoder_norm.bias"] == pytest.approx((lr, 0.0))
    assert hp["sem_seg_head.class_embed.weight"] == pytest.approx((lr, 0.05))
    assert hp["sem_seg_head.mask_embed.weight"] == pytest.approx((lr, 0.05))

    # every trainable parameter exactly once (the tied one is shared)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(by_id) == trainable
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)
    # equal hyper-parameters are merged into one group
    assert len(opt.param_groups) == len({(g["lr"], g["weight_decay"]) for g in opt.param_groups})


def test_frozen_batchnorm_is_a_norm():
    # FrozenBatchNorm2d holds buffers, not parameters; a subclass with a parameter still counts
    class _TrainableFrozenBN(FrozenBatchNorm2d):
        def __init__(self, n):
            super().__init__(n)
            self.extra = nn.Parameter(torch.ones(n))

    model = nn.Module()
    model.norm = _TrainableFrozenBN(4)
    model.fc = nn.Linear(4, 4)
    opt = build_optimizer(_cfg(OPTIMIZER="ADAMW", WEIGHT_DECAY_NORM=0.01), model)
    hp, _ = _hparams_by_name(model, opt)
    assert hp["norm.extra"] == pytest.approx((1e-3, 0.01))
    assert hp["fc.weight"] == pytest.approx((1e-3, 0.05))


def test_sgd_momentum():
    model = _Toy()
    opt = build_optimizer(_cfg(OPTIMIZER="SGD", MOMENTUM=0.8), model)
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["momentum"] == 0.8 for g in opt.param_groups)


def test_unknown_optimizer_names_it():
    with pytest.raises(ValueError, match="ADAM_FOO"):
        build_optimizer(_cfg(OPTIMIZER="ADAM_FOO"), _Toy())


def _step_with_big_grads(cfg):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    opt = build_optimizer(cfg, model)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    opt.step()
    grads = [p.grad for p in model.parameters()]
    deltas = [p.detach() - b for p, b in zip(model.parameters(), before)]
    return grads, deltas


def test_full_model_clipping_clips_total_norm():
    cfg = _cfg(
        OPTIMIZER="SGD",
        MOMENTUM=0.0,
        WEIGHT_DECAY=0.0,
        **{
            "CLIP_GRADIENTS.ENABLED": True,
            "CLIP_GRADIENTS.CLIP_TYPE": "full_model",
            "CLIP_GRADIENTS.CLIP_VALUE": 0.5,
            "CLIP_GRADIENTS.NORM_TYPE": 2.0,
        },
    )
    grads, deltas = _step_with_big_grads(cfg)
    total = math.sqrt(sum(float((g**2).sum()) for g in grads))
    assert total == pytest.approx(0.5, rel=1e-4)
    # uniform scaling: every gradient entry is equal, and SGD moved by lr * clipped grad
    n = sum(g.numel() for g in grads)
    expected = 0.5 / math.sqrt(n)
    for g, d in zip(grads, deltas):
        assert torch.allclose(g, torch.full_like(g, expected), rtol=1e-4)
        assert torch.allclose(d, torch.full_like(d, -1e-3 * expected), rtol=1e-3)


def test_per_parameter_clipping_uses_detectron2():
    cfg = _cfg(
        OPTIMIZER="SGD",
        MOMENTUM=0.0,
        WEIGHT_DECAY=0.0,
        **{
            "CLIP_GRADIENTS.ENABLED": True,
            "CLIP_GRADIENTS.CLIP_TYPE": "value",
            "CLIP_GRADIENTS.CLIP_VALUE": 0.25,
        },
    )
    grads, _ = _step_with_big_grads(cfg)
    for g in grads:
        assert torch.allclose(g, torch.full_like(g, 0.25))


def test_no_clipping_by_default():
    grads, _ = _step_with_big_grads(_cfg(OPTIMIZER="SGD", WEIGHT_DECAY=0.0))
    for g in grads:
        assert torch.allclose(g, torch.full_like(g, 3.0))


def test_poly_lr_schedule():
    cfg = _cfg(
        LR_SCHEDULER_NAME="WarmupPolyLR",
        MAX_ITER=100,
        WARMUP_ITERS=0,
        POLY_LR_POWER=0.9,
        POLY_LR_CONSTANT_ENDING=0.0,
    )
    model = nn.Linear(2, 2)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for it in (0, 10, 50):
        assert lrs[it] == pytest.approx(1e-3 * (1 - it / 100) ** 0.9, rel=1e-6)


def test_multistep_lr_schedule_from_detectron2():
    cfg = _cfg(
        LR_SCHEDULER_NAME="WarmupMultiStepLR",
        MAX_ITER=20,
        STEPS=(10,),
        GAMMA=0.1,
        WARMUP_ITERS=0,
    )
    opt = build_optimizer(cfg, nn.Linear(2, 2))
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(15):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-4)


def test_unknown_lr_scheduler_names_it():
    cfg = _cfg(LR_SCHEDULER_NAME="NoSuchLR")
    opt = build_optimizer(cfg, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="NoSuchLR"):
        build_lr_scheduler(cfg, opt)
