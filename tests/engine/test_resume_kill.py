"""
A training run killed with SIGKILL in the middle of writing a checkpoint resumes, with
``train_net.py --resume``, from the last complete checkpoint: same iteration, LR of the schedule,
restored optimizer state, and the half-written file is neither used nor left behind.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from model_utils import REPO

CONFIG = os.path.join(REPO, "configs", "synthetic", "panoptic.yaml")
MAX_ITER = 6
KILL_AT = 3  # killed while saving the checkpoint of this iteration

# train_net.py's cli, with a torch.save that writes part of the checkpoint of iteration KILL_AT
# and then hangs, as a slow disk would: the test kills the process there
_SLOW_SAVE_DRIVER = f"""
import sys, time, torch
real_save = torch.save

def slow_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("iteration") == {KILL_AT}:
        f.write(b"the first bytes of a checkpoint")
        f.flush()
        time.sleep(600)
    return real_save(obj, f, *args, **kwargs)

torch.save = slow_save
sys.path.insert(0, {REPO!r})
import train_net
train_net.cli(sys.argv[1:])
"""


def _opts(output_dir):
    # fmt: off
    return [
        "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(output_dir),
        "DATASETS.TEST", "()",
        "SOLVER.IMS_PER_BATCH", "1",
        "SOLVER.MAX_ITER", str(MAX_ITER),
        "SOLVER.CHECKPOINT_PERIOD", "1",
        "SOLVER.WARMUP_ITERS", "2",
        "TEST.EVAL_PERIOD", "0",
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
        "MODEL.MASK_FORMER.DEC_LAYERS", "2",
        "INPUT.MIN_SIZE_TRAIN", "(64,)",
        "DATALOADER.NUM_WORKERS", "0",
    ]
    # fmt: on


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from mask2former.data.synthetic import ensure_synthetic_dataset

    root = str(tmp_path_factory.mktemp("datasets"))
    ensure_synthetic_dataset(root, num_train=1, num_val=1)
    # train_net registers the synthetic datasets under $DETECTRON2_DATASETS
    return dict(os.environ, DETECTRON2_DATASETS=root, OMP_NUM_THREADS="1")


def _partial_files(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(".partial"))


def _wait_for_partial_checkpoint(proc, output_dir, timeout=240):
    """Wait until the process is stuck inside the save of iteration KILL_AT's checkpoint."""
    name = f"model_{KILL_AT:07d}.pth."
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the training ended before it could be killed"
        if os.path.isdir(output_dir):
            partial = [f for f in _partial_files(output_dir) if f.startswith(name)]
            if partial and os.path.getsize(os.path.join(output_dir, partial[0])) > 0:
                return partial[0]
        time.sleep(0.2)
    raise AssertionError(f"no partial checkpoint of iteration {KILL_AT} after {timeout} s")


def _expected_lrs(last_iteration):
    """The LR that the config's schedule gives iterations 0 .. ``last_iteration``."""
    import train_net
    from mask2former.solver import build_lr_scheduler

    args = train_net.default_argument_parser().parse_args(
        ["--config-file", CONFIG] + _opts("unused")
    )
    cfg, _ = train_net.build_config(args)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = {0: optimizer.param_groups[0]["lr"]}
    for it in range(1, last_iteration + 1):
        optimizer.step()
        scheduler.step()
        lrs[it] = optimizer.param_groups[0]["lr"]
    return lrs


def test_sigkill_during_a_save_then_resume(env, tmp_path):
    output_dir = str(tmp_path / "run")
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SLOW_SAVE_DRIVER, "--config-file", CONFIG, *_opts(output_dir)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            partial = _wait_for_partial_checkpoint(proc, output_dir)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # killed mid-save: the complete checkpoints and a tag naming the last of them
    last = f"model_{KILL_AT - 1:07d}.pth"
    checkpoints = [f"model_{i:07d}.pth" for i in range(KILL_AT)]
    assert sorted(f for f in os.listdir(output_dir) if f.endswith(".pth")) == checkpoints
    with open(os.path.join(output_dir, "last_checkpoint")) as f:
        assert f.read() == last
    assert _partial_files(output_dir) == [partial]
    with open(os.path.join(output_dir, last), "rb") as f:
        last_bytes = f.read()

    resumed = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", CONFIG, "--resume", *_opts(output_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert f"Removing the incomplete checkpoint file {os.path.join(output_dir, partial)}" in log
    assert f"training continues at iteration {KILL_AT}" in log
    assert _partial_files(output_dir) == []
    with open(os.path.join(output_dir, last), "rb") as f:
        assert f.read() == last_bytes  # read, never rewritten

    # the resumed run trained exactly the iterations after the last complete checkpoint, with
    # the schedule's LR: the scheduler state is saved after its step, so checkpoint k holds the
    # LR of iteration k + 1; metrics.json has the LR of the last iteration
    assert f"Starting training from iteration {KILL_AT}" in log
    expected = _expected_lrs(MAX_ITER)
    assert expected[KILL_AT] != expected[0]  # the schedule has moved on since iteration 0
    for it in range(KILL_AT, MAX_ITER - 1):
        checkpoint = torch.load(os.path.join(output_dir, f"model_{it:07d}.pth"))
        assert checkpoint["iteration"] == it
        scheduler = checkpoint["trainer"]["hooks"]["LRScheduler"]
        assert scheduler["last_epoch"] == it + 1
        assert scheduler["_last_lr"] == pytest.approx(
            [expected[it + 1]] * len(scheduler["_last_lr"])
        )
        # AdamW's state went on from the checkpoint: its step count includes the killed run's
        state = checkpoint["trainer"]["_trainer"]["optimizer"]["state"].values()
        assert {float(s["step"]) for s in state} == {it + 1.0}
    with open(os.path.join(output_dir, "metrics.json")) as f:
        last_metrics = [json.loads(line) for line in f if line.strip()][-1]
    assert last_metrics["iteration"] == MAX_ITER - 1
    assert last_metrics["lr"] == pytest.approx(expected[MAX_ITER - 1], rel=1e-9)
    assert torch.isfinite(torch.tensor(last_metrics["total_loss"]))
    final = torch.load(os.path.join(output_dir, "model_final.pth"))
    assert final["iteration"] == MAX_ITER - 1
    with open(os.path.join(output_dir, "last_checkpoint")) as f:
        assert f.read() == "model_final.pth"
