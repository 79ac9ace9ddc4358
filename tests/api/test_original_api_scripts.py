"""Scripts written against the original Mask2Former API (tests/examples/) run unchanged on this
package: a user's train_net.py (DefaultTrainer, the original's mappers, evaluators, optimizer
set-up) trains, checkpoints and evaluates on the synthetic dataset, and a demo script built on
the original's VisualizationDemo draws that model's predictions."""
import os
import re
import subprocess
import sys

import pytest

from model_utils import REPO

EXAMPLES = os.path.join(REPO, "tests", "examples")
CONFIG = os.path.join(REPO, "configs", "synthetic", "panoptic.yaml")
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "64",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32", "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32", "MODEL.MASK_FORMER.NHEADS", "4",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "MODEL.MASK_FORMER.DEC_LAYERS", "3", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "1000", "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64", "TEST.EVAL_PERIOD", "0",
]


def _run(script, args, root, timeout=600):
    env = dict(os.environ, DETECTRON2_DATASETS=root, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "demo")]))
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The synthetic dataset where `import mask2former` registers it ($DETECTRON2_DATASETS), and
    a model the user's train_net.py trained on it for a few iterations."""
    from mask2former.data.synthetic import ensure_synthetic_dataset

    root = str(tmp_path_factory.mktemp("datasets"))
    ensure_synthetic_dataset(root, num_train=4, num_val=2)
    out = str(tmp_path_factory.mktemp("train"))
    log = _run(
        "original_api_train_net.py",
        ["--config-file", CONFIG, "--num-gpus", "1", *TINY, "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", out],
        root,
    )
    return root, out, log


def test_user_train_net_trains_and_evaluates(trained):
    root, out, log = trained
    weights = os.path.join(out, "model_final.pth")
    assert os.path.isfile(weights), log[-3000:]
    assert re.search(r"iter: 2 .*total_loss: [0-9.]+", log), log[-3000:]
    log = _run(
        "original_api_train_net.py",
        ["--config-file", CONFIG, "--eval-only", *TINY, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out],
        root,
    )
    # the three evaluators the user's build_evaluator chose for a COCO-panoptic-style dataset
    assert "PQ" in log and "mIoU" in log, log[-3000:]
    assert re.search(r"copypaste: Task: segm", log), log[-3000:]


def test_user_demo_draws_predictions(trained, tmp_path):
    root, out, _ = trained
    images = sorted(os.listdir(os.path.join(root, "synthetic", "images", "val")))[:2]
    paths = [os.path.join(root, "synthetic", "images", "val", name) for name in images]
    log = _run(
        "original_api_demo.py",
        ["--config-file", CONFIG, "--input", *paths, "--output", str(tmp_path),
         "--opts", *TINY, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")],
        root,
    )
    for name in images:
        assert os.path.getsize(os.path.join(tmp_path, name)) > 0
    assert log.count("'panoptic_seg'") == len(images), log[-2000:]
