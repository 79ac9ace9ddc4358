"""train_net_video.py (train, exact resume, eval-only, config errors) and demo_video/ (frames in,
drawn frames out, one colour per track, bad input) on a tiny generated synthetic video set."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import hooks
from detectron2.structures import Instances
from detectron2.utils.env import seed_all_rng

from mask2former_video.data_video.synthetic.generator import ensure_synthetic_video_dataset
from mask2former_video.data_video.synthetic.register import register_all_synthetic_video
import train_net_video
from model_utils import REPO

CONFIG = os.path.join(REPO, "configs", "synthetic", "video_instance.yaml")
PREFIX = "_test_entry_points_video"
NUM_FRAMES = 4
# a small model
TINY_MODEL = [
    "MODEL.DEVICE", "cpu",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "MODEL.MASK_FORMER.DEC_LAYERS", "2",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MIN_SIZE_TEST", "64",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    # one training video: every iteration samples from the same frames, so an interrupted and
    # an uninterrupted run can be compared iteration by iteration
    root = str(tmp_path_factory.mktemp("video_datasets"))
    ensure_synthetic_video_dataset(root, num_train=1, num_val=2, num_frames=NUM_FRAMES, seed=3)
    register_all_synthetic_video(root, prefix=PREFIX)
    return root


def _opts(output_dir, max_iter, test_set=False):
    return [
        *TINY_MODEL,
        "OUTPUT_DIR", str(output_dir),
        "DATASETS.TRAIN", f"('{PREFIX}_train',)",
        "DATASETS.TEST", f"('{PREFIX}_val',)" if test_set else "()",
        "SOLVER.IMS_PER_BATCH", "1",
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "SOLVER.WARMUP_ITERS", "1",
        "DATALOADER.NUM_WORKERS", "0",
        "SEED", "7",
    ]


def _args(*opts, resume=False):
    flags = ["--resume"] if resume else []
    return train_net_video.train_net.default_argument_parser().parse_args(
        ["--config-file", CONFIG, *flags, *opts]
    )


def _train(args):
    """Train with every RNG seeded from the iteration number before data loading and before
    the forward pass (a fresh data loader iterator draws its own seed); the loss per iteration."""
    trainer = train_net_video.VideoTrainer(train_net_video.setup(args))

    def reseed(*_):
        seed_all_rng(1000 + trainer.iter)

    trainer.register_hooks([hooks.CallbackHook(before_step=reseed)])
    trainer.model.register_forward_pre_hook(reseed)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    return {it: loss for loss, it in trainer.storage.history("total_loss").values()}


def test_train_resume_gives_identical_loss_and_eval_only(video_root, tmp_path):
    full_dir = tmp_path / "full"
    losses = _train(_args(*_opts(full_dir, 3)))
    assert sorted(losses) == [0, 1, 2] and all(np.isfinite(list(losses.values())))
    assert (full_dir / "model_0000001.pth").is_file() and (full_dir / "model_final.pth").is_file()

    # the output folder of a run stopped after iteration 1: that checkpoint only
    resumed_dir = tmp_path / "resumed"
    keep = "model_0000001.pth"
    shutil.copytree(full_dir, resumed_dir, ignore=lambda _, names: [n for n in names if n != keep])
    (resumed_dir / "last_checkpoint").write_text(keep)
    resumed = _train(_args(*_opts(resumed_dir, 3), resume=True))
    assert sorted(resumed) == [2]
    assert resumed[2] == losses[2]  # bit-identical: same weights, optimizer, LR, clip, RNG

    # eval-only from the command line, where the datasets are registered from
    # $DETECTRON2_DATASETS: track AP printed, metrics and the server's results.json written
    env = dict(os.environ, DETECTRON2_DATASETS=video_root, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    eval_dir = tmp_path / "eval"
    opts = [*TINY_MODEL, "OUTPUT_DIR", str(eval_dir), "MODEL.WEIGHTS", str(full_dir / "model_final.pth")]
    out = subprocess.run(
        [sys.executable, "train_net_video.py", "--config-file", CONFIG, "--eval-only", *opts],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "copypaste: AP,AP50,AP75,APs,APm,APl,AR1,AR10" in log
    results = json.loads((eval_dir / "eval_results.json").read_text())
    assert 0.0 <= results["segm"]["AP"] <= 100.0
    predictions = json.loads((eval_dir / "inference" / "results.json").read_text())
    assert predictions and {len(p["segmentations"]) for p in predictions} == {NUM_FRAMES}
    dataset_ids = MetadataCatalog.get(f"{PREFIX}_val").thing_dataset_id_to_contiguous_id
    assert {p["category_id"] for p in predictions} <= set(dataset_ids)  # not contiguous ids


def test_config_errors_are_one_line():
    with pytest.raises(SystemExit, match="SOLVER.NO_SUCH_KEY"):
        train_net_video.cli(["--config-file", CONFIG, "SOLVER.NO_SUCH_KEY", "3"])


def test_video_keys_and_trainer(tmp_path):
    cfg = train_net_video.setup(_args("MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path)))
    assert cfg.INPUT.SAMPLING_FRAME_NUM == 2 and cfg.MODEL.MASK_FORMER.TEST.WINDOW_SIZE == 0
    with pytest.raises(ValueError, match="not implemented for the video model"):
        train_net_video.VideoTrainer.test_with_TTA(cfg, None)


# ---------------------------------------------------------------------------- demo_video
def _demo(*argv, env_root):
    env = dict(os.environ, DETECTRON2_DATASETS=env_root, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, os.path.join("demo_video", "demo.py"), "--config-file", CONFIG, *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_demo_on_a_folder_of_frames(video_root, tmp_path):
    frames_dir = os.path.join(video_root, "synthetic_video", "valid", "JPEGImages")
    video_dir = os.path.join(frames_dir, sorted(os.listdir(frames_dir))[0])
    names = sorted(os.listdir(video_dir))
    out = _demo(
        "--input", video_dir, "--output", str(tmp_path / "vis"), "--save-frames",
        "--confidence-threshold", "0", "--opts", *TINY_MODEL, env_root=video_root,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    written = sorted(os.listdir(tmp_path / "vis"))
    videos = [n for n in written if n.startswith("visualization.")]
    assert len(videos) == 1 and sorted(set(written) - set(videos)) == names
    inputs = [cv2.imread(os.path.join(video_dir, n)) for n in names]
    drawn = [cv2.imread(str(tmp_path / "vis" / n)) for n in names]
    assert all(d.shape == i.shape for d, i in zip(drawn, inputs))
    # the random model's tracks (threshold 0) are drawn over the frames
    assert any(np.abs(d.astype(int) - i.astype(int)).mean() > 1 for d, i in zip(drawn, inputs))
    capture = cv2.VideoCapture(str(tmp_path / "vis" / videos[0]))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(names)


def test_demo_names_a_missing_frame_file(video_root, tmp_path):
    frames_dir = os.path.join(video_root, "synthetic_video", "valid", "JPEGImages")
    video_dir = os.path.join(frames_dir, sorted(os.listdir(frames_dir))[0])
    first = os.path.join(video_dir, sorted(os.listdir(video_dir))[0])
    missing = os.path.join(video_dir, "no_such_frame.jpg")
    out = _demo("--input", first, missing, "--output", str(tmp_path / "vis"), env_root=video_root)
    assert out.returncode == 2
    assert f"Frame file {missing!r} does not exist" in out.stderr
    out = _demo("--video-input", str(tmp_path / "none.mp4"), "--output", str(tmp_path), env_root=video_root)
    assert out.returncode == 2 and "none.mp4" in out.stderr and "does not exist" in out.stderr


def test_each_track_keeps_its_colour():
    path = os.path.join(REPO, "demo_video", "video_visualizer.py")
    spec = importlib.util.spec_from_file_location("_video_visualizer_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metadata = MetadataCatalog.get(f"{PREFIX}_colours").set(thing_classes=["a", "b"])
    colors = module.track_colors(2)
    assert len(set(colors)) == 2 and module.track_colors(3)[:2] == colors
    background = np.full((40, 60, 3), 128, np.uint8)
    pixels = []
    for shift in (0, 30):  # the tracks move between the frames
        masks = torch.zeros(2, 40, 60, dtype=torch.bool)
        masks[0, 5:15, shift + 5 : shift + 15] = True
        masks[1, 25:35, 25 - shift // 2 : 35 - shift // 2] = True
        inst = Instances((40, 60), pred_masks=masks, scores=torch.tensor([0.9, 0.8]),
                         pred_classes=torch.tensor([0, 1]))
        vis = module.TrackVisualizer(background, metadata).draw_instance_predictions(inst, colors)
        image = vis.get_image()
        pixels.append([image[8, shift + 8].tolist(), image[33, 33 - shift // 2].tolist()])
    assert pixels[0] == pixels[1]  # the same colour for a track in both frames
    assert pixels[0][0] != pixels[0][1] and pixels[0][0] != [128, 128, 128]
