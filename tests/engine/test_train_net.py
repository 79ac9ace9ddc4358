"""train_net.py: config setup, a short CPU training run, exact resume, eval-only, and TTA."""
import os
import shutil

import pytest
import torch
from fvcore.transforms import HFlipTransform
from torch import nn

from detectron2.config import get_cfg
from detectron2.engine import HookBase, hooks
from detectron2.modeling import DatasetMapperTTA
from detectron2.utils.env import seed_all_rng

from mask2former.checkpoint import Mask2FormerCheckpointer
from mask2former.test_time_augmentation import SemanticSegmentorWithTTA
from model_utils import REPO, make_synthetic_root

PANOPTIC_CONFIG = os.path.join(REPO, "configs", "synthetic", "panoptic.yaml")
PREFIX = "_test_train_net_synthetic"


# ---------------------------------------------------------------- test-time augmentation
class _ColumnModel(nn.Module):
    """A fake segmentor: the class scores are the image's first channel, resized to the output
    size, so that a horizontal ramp gives scores that depend on left / right."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, batched_inputs):
        self.calls.append(len(batched_inputs))
        outs = []
        for x in batched_inputs:
            img = x["image"].float()[:1][None]  # (1, 1, h, w)
            scores = nn.functional.interpolate(
                img, size=(x["height"], x["width"]), mode="bilinear", align_corners=False
            )[0]
            outs.append({"sem_seg": torch.cat([scores, 255 - scores])})  # (2, H, W)
        return outs


def _tta_cfg(min_sizes=(32, 64), flip=True):
    cfg = get_cfg()
    cfg.TEST.AUG.MIN_SIZES = min_sizes
    cfg.TEST.AUG.MAX_SIZE = 1000
    cfg.TEST.AUG.FLIP = flip
    return cfg


def _ramp_image(h=32, w=48):
    ramp = torch.linspace(0, 255, w).expand(h, w)
    return ramp.expand(3, h, w).round().to(torch.uint8)


def test_tta_unflips_and_averages():
    model = _ColumnModel()
    image = _ramp_image()
    tta = SemanticSegmentorWithTTA(_tta_cfg(), model)
    (out,) = tta([{"image": image, "height": 32, "width": 48}])
    scores = out["sem_seg"]
    assert scores.shape == (2, 32, 48)
    # 2 sizes x (plain, flipped), one image per model call
    assert model.calls == [1, 1, 1, 1]
    # flipped predictions were flipped back: the ramp still increases left to right
    # (without un-flipping the average would be constant across columns)
    expected = image[0].float()
    assert torch.allclose(scores[0], expected, atol=6.0)
    assert scores[0, :, -1].mean() - scores[0, :, 0].mean() > 200


def test_tta_batch_size_gives_same_result():
    image = _ramp_image()
    inputs = [{"image": image, "height": 32, "width": 48}]
    one = SemanticSegmentorWithTTA(_tta_cfg(), _ColumnModel())(inputs)[0]["sem_seg"]
    model = _ColumnModel()
    batched = SemanticSegmentorWithTTA(_tta_cfg(), model, batch_size=3)(inputs)[0]["sem_seg"]
    assert model.calls == [3, 1]
    assert torch.allclose(one, batched)


def test_tta_uses_given_mapper_and_averages_exactly():
    class _Mapper:
        def __call__(self, d):
            return DatasetMapperTTA(min_sizes=[32], max_size=1000, flip=True)(d)

    model = _ColumnModel()
    image = _ramp_image()
    tta = SemanticSegmentorWithTTA(_tta_cfg(), model, tta_mapper=_Mapper())
    (out,) = tta([{"image": image, "height": 32, "width": 48}])
    # at the original size both augmentations reproduce the image exactly
    direct = model([{"image": image, "height": 32, "width": 48}])[0]["sem_seg"]
    assert torch.allclose(out["sem_seg"], direct, atol=1e-4)
    aug = _Mapper()({"image": image, "height": 32, "width": 48})
    assert any(isinstance(t, HFlipTransform) for t in aug[1]["transforms"].transforms)


# ---------------------------------------------------------------- train_net.py
@pytest.fixture(scope="module")
def train_net():
    import train_net as module

    return module


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    # one training image: every iteration sees the same batch, so an interrupted run and an
    # uninterrupted one can be compared iteration by iteration
    return make_synthetic_root(tmp_path_factory, PREFIX, num_train=1, num_val=2)


def _args(train_net, *opts, config=PANOPTIC_CONFIG, eval_only=False, resume=False):
    argv = ["--config-file", config]
    if eval_only:
        argv.append("--eval-only")
    if resume:
        argv.append("--resume")
    return train_net.default_argument_parser().parse_args(argv + list(opts))


def _tiny_opts(output_dir, max_iter, test_set=False):
    test = f"('{PREFIX}_panoptic_val',)" if test_set else "()"
    return [
        "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(output_dir),
        "DATASETS.TRAIN", f"('{PREFIX}_panoptic_train',)",
        "DATASETS.TEST", test,  # no evaluation at the end of training
        "SOLVER.IMS_PER_BATCH", "1",
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "SOLVER.WARMUP_ITERS", "1",
        "TEST.EVAL_PERIOD", "0",
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
        "MODEL.MASK_FORMER.DEC_LAYERS", "2",
        "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MIN_SIZE_TEST", "64",
        "DATALOADER.NUM_WORKERS", "0",
        "SEED", "7",
    ]


class _ReseedHook(HookBase):
    """Seeds every RNG from the iteration number, before data loading and again before the
    model's forward, so that iteration k draws the same random numbers whether or not
    training was resumed before it (a fresh data loader iterator draws its own seed)."""

    def _seed(self, *_):
        seed_all_rng(1000 + self.trainer.iter)

    def before_train(self):
        self.trainer.model.register_forward_pre_hook(self._seed)

    def before_step(self):
        self._seed()


def _train(train_net, args):
    cfg = train_net.setup(args)
    trainer = train_net.Trainer(cfg)
    # DefaultTrainer built the hooks: the one that saves must save through our checkpointer,
    # and the loop (which calls after_backward) must check the losses
    savers = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert len(savers) == 1 and savers[0].checkpointer is trainer.checkpointer
    assert isinstance(trainer.checkpointer, Mask2FormerCheckpointer)
    assert trainer.loss_check in trainer._trainer._hooks
    trainer.register_hooks([_ReseedHook()])
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    history = trainer.storage.history("total_loss").values()
    return {it: loss for loss, it in history}


def test_train_checkpoint_resume_gives_identical_loss(train_net, synthetic_root, tmp_path):
    torch.set_num_threads(1)
    full_dir = tmp_path / "full"
    losses = _train(train_net, _args(train_net, *_tiny_opts(full_dir, 3)))
    assert sorted(losses) == [0, 1, 2]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    # periodic checkpoint after iteration 1 (CHECKPOINT_PERIOD 2) and the final model
    assert (full_dir / "model_0000001.pth").is_file()
    assert (full_dir / "model_final.pth").is_file()
    ckpt = torch.load(full_dir / "model_0000001.pth", map_location="cpu")
    assert ckpt["iteration"] == 1
    assert "optimizer" in ckpt["trainer"]["_trainer"] and "LRScheduler" in ckpt["trainer"]["hooks"]

    # resume from the checkpoint of iteration 1: the next iteration is 2, with the same loss
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(full_dir / "model_0000001.pth", resumed_dir / "model_0000001.pth")
    (resumed_dir / "last_checkpoint").write_text("model_0000001.pth")
    resumed = _train(train_net, _args(train_net, *_tiny_opts(resumed_dir, 3), resume=True))
    assert sorted(resumed) == [2]
    assert resumed[2] == losses[2]  # bit-identical: same weights, optimizer, LR, data, RNG

    # eval-only from the final weights: PQ / mIoU / AP computed by detectron2's evaluators
    res = train_net.main(
        _args(
            train_net,
            *_tiny_opts(full_dir, 3, test_set=True),
            "MODEL.WEIGHTS", str(full_dir / "model_final.pth"),
            eval_only=True,
        )
    )
    assert {"panoptic_seg", "sem_seg", "segm"} <= set(res)
    assert 0.0 <= res["panoptic_seg"]["PQ"] <= 100.0
    assert 0.0 <= res["sem_seg"]["mIoU"] <= 100.0


def test_amp_disabled_on_cpu(train_net):
    args = _args(train_net, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "True")
    cfg, notes = train_net.build_config(args)
    assert cfg.SOLVER.AMP.ENABLED is False
    assert any("AMP" in n for n in notes)
    assert cfg.is_frozen()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a CPU-only machine")
def test_cuda_device_falls_back_to_cpu(train_net):
    cfg, notes = train_net.build_config(_args(train_net, "MODEL.DEVICE", "cuda"))
    assert cfg.MODEL.DEVICE == "cpu"
    assert any("CUDA" in n for n in notes)


def test_unknown_key_in_file_is_one_line_error(train_net, tmp_path, capsys):
    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {PANOPTIC_CONFIG}\nMODEL:\n  MASK_FORMER:\n    NO_SUCH_KEY: 1\n")
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text("_BASE_: child.yaml\nSOLVER:\n  MAX_ITER: 5\n")
    with pytest.raises(SystemExit) as e:
        train_net.cli(["--config-file", str(leaf)])
    message = str(e.value.code)
    assert "\n" not in message
    assert "MODEL.MASK_FORMER.NO_SUCH_KEY" in message and str(child) in message


def test_unknown_key_on_command_line_is_one_line_error(train_net):
    with pytest.raises(SystemExit) as e:
        train_net.cli(["--config-file", PANOPTIC_CONFIG, "SOLVER.NO_SUCH_KEY", "3"])
    message = str(e.value.code)
    assert "\n" not in message
    assert "SOLVER.NO_SUCH_KEY" in message and "command line" in message


def test_setup_raises_config_error(train_net):
    from mask2former.utils.config_merge import ConfigError

    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        train_net.setup(_args(train_net, "SOLVER.MAX_ITER", "many"))


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_synthetic_configs_build_a_model(train_net, task):
    config = os.path.join(REPO, "configs", "synthetic", f"{task}.yaml")
    cfg, _ = train_net.build_config(_args(train_net, "MODEL.DEVICE", "cpu", config=config))
    model = train_net.Trainer.build_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 20_000_000  # small enough to train on a CPU in minutes
    assert cfg.MODEL.WEIGHTS == ""  # trained from scratch
    optimizer = train_net.Trainer.build_optimizer(cfg, model)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


# ---------------------------------------------------------------- failures
class _NaNMaskLossAt(HookBase):
    """Makes loss_mask NaN at one iteration, as a diverging run would."""

    def __init__(self, iteration):
        self.iteration = iteration

    def before_train(self):
        self.trainer.model.register_forward_hook(self._poison)

    def _poison(self, module, args, losses):
        if self.trainer.iter == self.iteration:
            return {**losses, "loss_mask": losses["loss_mask"] * float("nan")}
        return losses


class _SnapshotCheckpoints(HookBase):
    """The bytes of every checkpoint file after each iteration (checkpointer hooks run first)."""

    def __init__(self):
        self.files = {}

    def after_step(self):
        out = self.trainer.cfg.OUTPUT_DIR
        for name in os.listdir(out):
            if name.endswith(".pth") or name == "last_checkpoint":
                with open(os.path.join(out, name), "rb") as f:
                    self.files[name] = f.read()


class _SaveFinalAfterTrain(HookBase):
    """A hook that saves in after_train, whether or not the training succeeded."""

    def after_train(self):
        self.trainer.checkpointer.save("model_final", iteration=self.trainer.iter)


def test_nan_loss_stops_training_without_touching_good_checkpoints(
    train_net, synthetic_root, tmp_path
):
    torch.set_num_threads(1)
    out = tmp_path / "nan"
    opts = [*_tiny_opts(out, 3), "SOLVER.CHECKPOINT_PERIOD", "1"]
    cfg = train_net.setup(_args(train_net, *opts))
    trainer = train_net.Trainer(cfg)
    snapshot = _SnapshotCheckpoints()
    trainer.register_hooks([_NaNMaskLossAt(2), snapshot, _SaveFinalAfterTrain()])
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError) as e:
        trainer.train()

    message = str(e.value)
    assert "iteration 2" in message and "loss_mask=nan" in message
    # every loss is named with its value, the finite ones too
    losses = trainer.storage.history("total_loss").values()
    assert [it for _, it in losses] == [0, 1]  # iteration 2 was not recorded
    for name in ("loss_ce", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"):
        assert f"{name}=" in message and f"{name}=nan" not in message
    # the good checkpoints are there, as written; nothing was saved after the failure
    written = [f for f in os.listdir(out) if f.endswith((".pth", ".partial", "last_checkpoint"))]
    assert sorted(written) == ["last_checkpoint", "model_0000000.pth", "model_0000001.pth"]
    assert snapshot.files.keys() == {"last_checkpoint", "model_0000000.pth", "model_0000001.pth"}
    for name, content in snapshot.files.items():
        assert (out / name).read_bytes() == content, name
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"


def test_eval_only_with_mismatched_weights_names_file_and_keys(train_net, tmp_path):
    cfg, _ = train_net.build_config(_args(train_net, "MODEL.DEVICE", "cpu"))
    state = train_net.Trainer.build_model(cfg).state_dict()
    del state["sem_seg_head.predictor.class_embed.weight"]
    weights = tmp_path / "incomplete.pth"
    torch.save({"model": state}, weights)
    with pytest.raises(SystemExit) as e:
        train_net.cli(
            ["--config-file", PANOPTIC_CONFIG, "--eval-only", "MODEL.DEVICE", "cpu",
             "OUTPUT_DIR", str(tmp_path / "eval"), "MODEL.WEIGHTS", str(weights)]
        )
    message = str(e.value.code)
    assert str(weights) in message and "1 missing" in message
    assert "sem_seg_head.predictor.class_embed.weight" in message


@pytest.mark.parametrize("num_gpus, hidden", [(2, True), (1, False)])
def test_cpu_workers_do_not_see_cuda(train_net, monkeypatch, num_gpus, hidden):
    # detectron2's launch picks NCCL when a GPU is visible: CPU processes must not see one
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    launched = []
    monkeypatch.setattr(train_net, "launch", lambda main, n, **kw: launched.append(n))
    train_net.cli(["--config-file", PANOPTIC_CONFIG, "--num-gpus", str(num_gpus), "MODEL.DEVICE", "cpu"])
    assert launched == [num_gpus]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ("" if hidden else "0")


class _TwoLosses(nn.Module):
    """Losses (loss_a, loss_b) of a linear layer; loss_b is NaN for an input of NaNs."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x):
        return {"loss_a": self.linear.weight.abs().sum(), "loss_b": self.linear(x).sum()}


def test_finite_loss_check_stops_the_loop_before_the_step():
    from detectron2.engine import SimpleTrainer
    from detectron2.utils.events import EventStorage

    from mask2former.engine import FiniteLossCheck, NonFiniteLossError

    model = _TwoLosses()
    data = [torch.ones(1, 2), torch.full((1, 2), float("nan"))]
    loop = SimpleTrainer(model, iter(data), torch.optim.SGD(model.parameters(), lr=0.1))
    check = FiniteLossCheck()
    loop.register_hooks([check])
    check.watch(model)
    with EventStorage(0):
        loop.iter = 0
        loop.run_step()  # finite: stepped
        stepped = model.linear.weight.detach().clone()
        loop.iter = 1
        with pytest.raises(NonFiniteLossError) as e:
            loop.run_step()
    assert "iteration 1" in str(e.value) and "loss_b=nan" in str(e.value)
    assert "loss_a=" in str(e.value) and "loss_a=nan" not in str(e.value)
    assert torch.equal(model.linear.weight, stepped)  # no optimizer step after the NaN
    check.unwatch()


def test_tta_refuses_a_model_that_returns_semantic_labels():
    model = _ColumnModel()
    model.semantic_output = "labels"
    with pytest.raises(ValueError, match="SEMANTIC_OUTPUT"):
        SemanticSegmentorWithTTA(_tta_cfg(), model)


class _GradientsAtForward(HookBase):
    """Records, at each training forward, whether any parameter still holds a gradient."""

    def __init__(self):
        self.held = []

    def before_train(self):
        def record(module, inputs):
            if module.training:
                self.held.append(any(p.grad is not None for p in module.parameters()))

        self.trainer.model.register_forward_pre_hook(record)


def test_gradients_are_freed_before_the_forward(train_net, synthetic_root, tmp_path):
    torch.set_num_threads(1)
    cfg = train_net.setup(_args(train_net, *_tiny_opts(tmp_path / "grads", 3)))
    trainer = train_net.Trainer(cfg)
    watch = _GradientsAtForward()
    trainer.register_hooks([watch])
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert watch.held == [False, False, False]
