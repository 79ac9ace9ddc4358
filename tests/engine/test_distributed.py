"""
Distributed training and evaluation on the CPU: 2 processes (gloo) launched by detectron2's
``launch`` against 1 process with the same total batch.

What "the same losses" means here. With SOLVER.IMS_PER_BATCH 2 on a 2-image dataset, the single
process sees both images in every batch, and each of the 2 processes one of them (detectron2's
TrainingSampler shards one shared permutation). Then, as a function of the weights and the
batch:

- the mask and dice losses are sums over matched masks divided by the number of masks of the
  whole batch (the criterion all-reduces it), so the average over processes that detectron2
  logs, and the gradient that DDP averages, equal the single process's;
- the class loss is a weighted mean per process: it averages to the batch's weighted mean only
  if every image has the same total weight, so the test sets the "no object" weight to 1
  (with the usual 0.1 the two differ by design, as in DETR);
- augmentation is deterministic (no random flip, one train size).

The matcher and the criterion sample random points (``torch.rand``) from each process's own
generator: one process drawing for 2 images and 2 processes drawing for 1 each can't get the same
points. The test therefore swaps ``torch.rand`` for a fixed draw whose values depend only on the
last two dimensions, so every mask (and every image) gets the same candidate points whichever
process handles it; importance sampling then still picks each mask's own uncertain points.

BatchNorm. With FrozenBN every image goes through the same computation in both set-ups, and the
losses of 3 SGD iterations agree to float precision (measured: 1e-6 relative at most). The
optimizer is SGD without clipping, whose update is proportional to the gradient, so a gradient
averaged with the wrong scale would show in iterations 1 and 2 (AdamW's update is nearly
scale-free and would hide it). SyncBN (on the CPU detectron2's naiveSyncBN) gives the batch
statistics too, but computed in another order (E[x^2] - E[x]^2 from per-process means): the
forward agrees to ~1e-7, which the first iteration's losses check. Its gradients are not
compared: the model's gradient is not smooth at that scale (in one process, adding noise of 1e-6
to the backbone features moves the gradient of one pixel-decoder level locally by 5e-4 of its
largest entry; with the 2-process SyncBN rounding, the backbone's gradients differ by ~5e-3),
so later iterations drift apart by ~1e-3 without anything being wrong.
"""

import json
import os
from datetime import timedelta

import pytest
import torch

from detectron2.engine import HookBase, launch
from detectron2.utils import comm

from model_utils import REPO

PREFIX = "_test_distributed"
PANOPTIC_CONFIG = os.path.join(REPO, "configs", "synthetic", "panoptic.yaml")
NUM_ITER = 3
NUM_THING_CLASSES = 5  # of the 8 synthetic classes; the other 3 are stuff
NAN_RANK, NAN_ITER = 1, 1

_REAL_RAND = torch.rand


def _points_rand(*size, generator=None, dtype=None, device=None, **kwargs):
    """``torch.rand`` whose rows are all the same fixed draw (see the module doc)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
        size = tuple(size[0])
    tail = tuple(size[-2:])
    fixed = _REAL_RAND(tail, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return (
        fixed.expand(size)
        .clone()
        .to(device=device)
        .requires_grad_(kwargs.get("requires_grad", False))
    )


class _RecordBatches(HookBase):
    """Records the file names that the model gets at each iteration (this process's share)."""

    def __init__(self):
        self.files = {}

    def before_train(self):
        self.trainer.model.register_forward_pre_hook(self._record)

    def _record(self, module, args):
        self.files[self.trainer.iter] = sorted(os.path.basename(d["file_name"]) for d in args[0])


class _NaNLossOnOneRank(HookBase):
    """Makes the class loss NaN at iteration ``NAN_ITER`` on rank ``NAN_RANK`` only."""

    def before_train(self):
        self.trainer.model.register_forward_hook(self._poison)

    def _poison(self, module, args, losses):
        if self.trainer.iter == NAN_ITER and comm.get_rank() == NAN_RANK:
            return {**losses, "loss_ce": losses["loss_ce"] * float("nan")}
        return losses


def _opts(output_dir, *extra):
    # fmt: off
    return [
        "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(output_dir),
        "DATASETS.TRAIN", f"('{PREFIX}_panoptic_train',)",
        "DATASETS.TEST", "()",
        "SOLVER.IMS_PER_BATCH", "2",  # total: 1 image per process with 2 processes
        "SOLVER.MAX_ITER", str(NUM_ITER),
        "SOLVER.CHECKPOINT_PERIOD", "100",
        "SOLVER.OPTIMIZER", "SGD",
        "SOLVER.BASE_LR", "0.02",
        "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.CLIP_GRADIENTS.ENABLED", "False",
        "TEST.EVAL_PERIOD", "0",
        "MODEL.RESNETS.NORM", "FrozenBN",
        "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", "1.0",
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
        "MODEL.MASK_FORMER.DEC_LAYERS", "4",  # 3 layers: every feature level is used (DDP)
        "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.RANDOM_FLIP", "none",
        "DATALOADER.NUM_WORKERS", "0",
        "SEED", "7",
        *extra,
    ]
    # fmt: on


def _parse(train_net, opts, eval_only=False):
    argv = ["--config-file", PANOPTIC_CONFIG] + (["--eval-only"] if eval_only else [])
    return train_net.default_argument_parser().parse_args(argv + list(opts))


def _train(train_net, output_dir, *opts, hooks=()):
    """
    Losses (averaged over processes, on the main one) and this process's images per iteration,
    and the FloatingPointError that stopped the training, if any.
    """
    cfg = train_net.setup(_parse(train_net, _opts(output_dir, *opts)))
    trainer = train_net.Trainer(cfg)
    batches = _RecordBatches()
    trainer.register_hooks([batches, *hooks])
    trainer.resume_or_load(resume=False)
    error = None
    try:
        trainer.train()
    except FloatingPointError as e:
        error = {"type": type(e).__name__, "message": str(e)}
    losses = {}
    if comm.is_main_process():
        for name in ["total_loss"] + [k for k in trainer.storage.histories() if "loss_" in k]:
            for value, it in trainer.storage.history(name).values():
                losses.setdefault(it, {})[name] = value
    return {
        "losses": losses,
        "files": batches.files,
        "norm": cfg.MODEL.RESNETS.NORM,
        "error": error,
    }


def _evaluate(train_net, output_dir, weights):
    """Metrics of an eval-only run, and how many images each evaluator wrote predictions for."""
    opts = _opts(
        output_dir, "DATASETS.TEST", f"('{PREFIX}_panoptic_val',)", "MODEL.WEIGHTS", weights
    )
    results = train_net.main(_parse(train_net, opts, eval_only=True))
    if not comm.is_main_process():
        return {}
    inference = os.path.join(output_dir, "inference")
    with open(os.path.join(inference, "predictions.json")) as f:
        panoptic = [a["image_id"] for a in json.load(f)["annotations"]]
    with open(os.path.join(inference, "sem_seg_predictions.json")) as f:
        semantic = {p["file_name"] for p in json.load(f)}
    instances = [
        p["image_id"] for p in torch.load(os.path.join(inference, "instances_predictions.pth"))
    ]
    return {
        "metrics": results,
        "panoptic_image_ids": panoptic,
        "semantic_files": sorted(semantic),
        "instance_image_ids": instances,
    }


def _stuff_biased_weights(path):
    """
    A copy of checkpoint ``path`` whose class head favours the stuff classes: 3 iterations
    teach the model nothing, and metrics that are all 0 would compare nothing.
    """
    checkpoint = torch.load(path, map_location="cpu")
    bias = checkpoint["model"]["sem_seg_head.predictor.class_embed.bias"]
    bias[NUM_THING_CLASSES:-1] += 8.0  # the last logit is "no object"
    biased = path.replace(".pth", "_stuff_biased.pth")
    torch.save({"model": checkpoint["model"]}, biased)
    return biased


def _run(root, out_dir, eval_weights=None):
    """
    Everything one process does; returns what it saw (rank 0 holds the averaged losses).
    ``eval_weights``: the checkpoint to evaluate, by default one made from this run's.
    """
    import train_net
    from mask2former.data.synthetic import register_all_synthetic

    register_all_synthetic(root, prefix=PREFIX)
    torch.rand = _points_rand
    try:
        result = {"train": _train(train_net, os.path.join(out_dir, "train"))}
        comm.synchronize()
        if eval_weights is None:
            eval_weights = _stuff_biased_weights(os.path.join(out_dir, "train", "model_final.pth"))
        result["eval"] = _evaluate(train_net, os.path.join(out_dir, "eval"), eval_weights)
        # SyncBN; with 2 processes, rank NAN_RANK's loss becomes NaN at iteration NAN_ITER
        syncbn = ["MODEL.RESNETS.NORM", "SyncBN", "SOLVER.CHECKPOINT_PERIOD", "1"]
        result["syncbn"] = _train(
            train_net, os.path.join(out_dir, "syncbn"), *syncbn, hooks=[_NaNLossOnOneRank()]
        )
    finally:
        torch.rand = _REAL_RAND
    return result


def _worker(root, out_dir, eval_weights):
    torch.set_num_threads(1)
    result = _run(root, out_dir, eval_weights)
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(result, f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mask2former.data.synthetic import ensure_synthetic_dataset

    root = str(tmp_path_factory.mktemp("datasets"))
    ensure_synthetic_dataset(root, num_train=2, num_val=2)
    torch.set_num_threads(1)
    single_dir = str(tmp_path_factory.mktemp("single"))
    single = json.loads(json.dumps(_run(root, single_dir)))  # same key types as the workers'

    multi_dir = str(tmp_path_factory.mktemp("multi"))
    launch(
        _worker,
        2,
        dist_url="auto",
        args=(root, multi_dir, os.path.join(single_dir, "train", "model_final_stuff_biased.pth")),
        # a process left waiting in a collective fails the test in minutes, not in 30
        timeout=timedelta(minutes=2),
    )
    ranks = []
    for rank in range(2):
        with open(os.path.join(multi_dir, f"rank{rank}.json")) as f:
            ranks.append(json.load(f))
    return {"single": single, "ranks": ranks, "multi_dir": multi_dir}


def _assert_same_losses(single, multi, rel):
    assert set(single) == set(multi) and len(single) > 4
    for name, value in single.items():
        assert multi[name] == pytest.approx(value, rel=rel, abs=1e-6), name


def test_each_process_gets_its_share_of_the_batch(runs):
    single = runs["single"]["train"]["files"]
    rank0, rank1 = (r["train"]["files"] for r in runs["ranks"])
    assert sorted(single) == sorted(rank0) == sorted(rank1) == [str(i) for i in range(NUM_ITER)]
    for it in single:
        assert len(single[it]) == 2 and len(rank0[it]) == 1 and len(rank1[it]) == 1
        assert sorted(rank0[it] + rank1[it]) == single[it]


def test_two_processes_give_the_losses_of_one(runs):
    single = runs["single"]["train"]["losses"]
    multi = runs["ranks"][0]["train"]["losses"]
    assert sorted(single) == sorted(multi) == [str(i) for i in range(NUM_ITER)]
    for it in single:
        _assert_same_losses(single[it], multi[it], rel=1e-5)
    # the SGD steps move the losses far more than the tolerance: iterations 1 and 2 check that
    # the gradients were averaged with the right scale, not only the forward pass
    assert abs(single["2"]["total_loss"] - single["0"]["total_loss"]) > 1e-2


def test_two_process_evaluation_counts_each_image_once(runs):
    single = runs["single"]["eval"]
    multi = runs["ranks"][0]["eval"]
    assert runs["ranks"][1]["eval"] == {}  # only the main process evaluates the gathered results
    assert sorted(multi["panoptic_image_ids"]) == sorted(single["panoptic_image_ids"])
    assert len(set(multi["panoptic_image_ids"])) == len(multi["panoptic_image_ids"]) == 2
    assert len(multi["instance_image_ids"]) == len(set(multi["instance_image_ids"])) == 2
    assert multi["semantic_files"] == single["semantic_files"] and len(multi["semantic_files"]) == 2
    for task, metrics in single["metrics"].items():
        for name, value in metrics.items():
            assert multi["metrics"][task][name] == pytest.approx(value, abs=1e-6, nan_ok=True), (
                task,
                name,
            )
    assert single["metrics"]["sem_seg"]["mIoU"] > 0  # not a comparison of zeros only


def test_syncbn_statistics_span_the_processes(runs):
    single = runs["single"]["syncbn"]
    multi = runs["ranks"][0]["syncbn"]
    # SyncBN can't run on CPU tensors in distributed training: detectron2's naiveSyncBN does
    assert single["norm"] == multi["norm"] == runs["ranks"][1]["syncbn"]["norm"] == "naiveSyncBN"
    assert single["error"] is None and sorted(single["losses"]) == ["0", "1", "2"]
    _assert_same_losses(single["losses"]["0"], multi["losses"]["0"], rel=1e-5)


def test_nan_loss_on_one_process_stops_all(runs):
    for rank, result in enumerate(runs["ranks"]):
        error = result["syncbn"]["error"]
        assert error["type"] == "NonFiniteLossError", rank
        assert f"iteration {NAN_ITER}" in error["message"]
        assert f"rank {NAN_RANK}: " in error["message"] and "loss_ce=nan" in error["message"]
    assert sorted(runs["ranks"][0]["syncbn"]["losses"]) == ["0"]
    nan_dir = os.path.join(runs["multi_dir"], "syncbn")
    checkpoints = sorted(f for f in os.listdir(nan_dir) if f.endswith(".pth"))
    assert checkpoints == ["model_0000000.pth"]  # nothing after the failed iteration
    with open(os.path.join(nan_dir, "last_checkpoint")) as f:
        assert f.read() == "model_0000000.pth"
