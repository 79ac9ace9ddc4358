"""demo/: drawing predictions on images, folders, globs and videos; errors for bad inputs."""
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detectron2.utils.visualizer import Visualizer

from model_utils import REPO

# demo.py imports `predictor` from its own folder, which `python demo/demo.py` puts on sys.path
if os.path.join(REPO, "demo") not in sys.path:
    sys.path.append(os.path.join(REPO, "demo"))
PANOPTIC_CONFIG = os.path.join(REPO, "configs", "synthetic", "panoptic.yaml")
INSTANCE_CONFIG = os.path.join(REPO, "configs", "synthetic", "instance.yaml")
# a small model, and thresholds at 0 so that its random weights still predict segments
TINY_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "MODEL.MASK_FORMER.DEC_LAYERS", "2",
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "3",
    "INPUT.MIN_SIZE_TEST", "64",
]
# (name, (height, width), grayscale)
IMAGES = [("a.jpg", (64, 80), False), ("b.png", (72, 64), False), ("gray.png", (64, 64), True)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_cli():
    from demo import demo as module

    return module


def _cfg(*opts, config=PANOPTIC_CONFIG):
    import train_net

    args = train_net.default_argument_parser().parse_args(
        ["--config-file", config, *TINY_OPTS, *opts]
    )
    return train_net.build_config(args)[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A freshly initialized tiny model's weights, saved as detectron2 saves them."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(_cfg())
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": model.state_dict(), "iteration": 0}, path)
    return str(path)


def _scene(h: int, w: int, shift: int = 0) -> np.ndarray:
    """A BGR image (h, w, 3): a red box and a blue disc on gray."""
    image = np.full((h, w, 3), 120, np.uint8)
    cv2.rectangle(image, (4 + shift, 6), (w // 2 + shift, h - 10), (0, 0, 230), -1)
    cv2.circle(image, (w - 18, h // 2), 12, (220, 40, 0), -1)
    return image


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for name, (h, w), gray in IMAGES:
        image = _scene(h, w)
        cv2.imwrite(str(root / name), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if gray else image)
    (root / "notes.txt").write_text("not an image")  # ignored in a folder
    assert cv2.imread(str(root / "gray.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    return root


def _argv(checkpoint, *args, config=PANOPTIC_CONFIG, opts=()):
    return [
        "--config-file", config, *args,
        "--opts", *TINY_OPTS, "MODEL.WEIGHTS", checkpoint, *opts,
    ]


def _blank(bgr: np.ndarray) -> np.ndarray:
    """What the Visualizer's canvas shows with nothing drawn on it (RGB): the reference for
    "something was drawn" (the canvas is not pixel-identical to the input)."""
    return Visualizer(bgr[:, :, ::-1], None).output.get_image()


def _mean_change(drawing_bgr: np.ndarray, image_bgr: np.ndarray, where=None) -> float:
    diff = np.abs(drawing_bgr[:, :, ::-1].astype(int) - _blank(image_bgr).astype(int)).sum(2)
    return float(diff[where].mean() if where is not None else diff.mean())


# ----------------------------------------------------------------------------- predictor
def test_task_defaults_and_choice():
    from predictor import DemoError, choose_task, enabled_tasks

    assert enabled_tasks(_cfg()) == ["panoptic", "instance", "semantic"]
    assert choose_task(_cfg()) == "panoptic"
    assert choose_task(_cfg(), "semantic") == "semantic"
    instance_cfg = _cfg(config=INSTANCE_CONFIG)
    assert choose_task(instance_cfg) == "instance"
    with pytest.raises(DemoError, match=r"MODEL.MASK_FORMER.TEST.SEMANTIC_ON is False"):
        choose_task(instance_cfg, "semantic")


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_run_on_image_draws_the_chosen_task(checkpoint, task):
    from predictor import VisualizationDemo

    demo = VisualizationDemo(_cfg("MODEL.WEIGHTS", checkpoint), task=task, confidence_threshold=0)
    # the checkpoint's weights are the model's
    saved = torch.load(checkpoint, map_location="cpu")["model"]
    state = demo.predictor.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())

    image = _scene(64, 80)
    predictions, vis = demo.run_on_image(image)
    drawing = vis.get_image()[:, :, ::-1]
    assert drawing.shape == image.shape and drawing.dtype == np.uint8
    if task == "panoptic":
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        assert panoptic_seg.shape == (64, 80) and len(segments_info) > 0
        drawn = (panoptic_seg > 0).numpy()
        assert demo.summary(predictions).startswith(f"{len(segments_info)} segment")
    elif task == "instance":
        instances = predictions["instances"]
        assert len(instances) == 3  # TEST.DETECTIONS_PER_IMAGE
        drawn = (instances.pred_masks.sum(0) > 0).numpy()
        assert demo.summary(predictions) == "3 instances"
    else:
        assert predictions["sem_seg"].shape == (8, 64, 80)
        drawn = np.ones((64, 80), bool)
    assert drawn.any()
    # colored where the model predicted something
    assert _mean_change(drawing, image, drawn) > 20


def test_confidence_threshold_filters_instances(checkpoint):
    from predictor import VisualizationDemo

    cfg = _cfg("MODEL.WEIGHTS", checkpoint)
    image = _scene(64, 80)
    demo = VisualizationDemo(cfg, task="instance", confidence_threshold=0.0)
    predictions, _ = demo.run_on_image(image)
    scores = predictions["instances"].scores
    middle = float(scores.sort().values[1])  # keeps only the best
    demo.confidence_threshold = middle
    assert demo.summary(predictions) == "1 instance"
    demo.confidence_threshold = 1.0
    predictions, vis = demo.run_on_image(image)
    assert demo.summary(predictions) == "0 instances"
    assert np.array_equal(vis.get_image(), _blank(image))


def test_instance_boxes_come_from_masks(checkpoint):
    from detectron2.structures import BitMasks
    from predictor import VisualizationDemo

    demo = VisualizationDemo(_cfg("MODEL.WEIGHTS", checkpoint), task="instance", confidence_threshold=0.0)
    predictions, _ = demo.run_on_image(_scene(64, 80))
    (instances,) = demo._task_output(predictions)
    boxes = instances.pred_boxes.tensor
    # the model's boxes are drawn, so that labels sit on their objects rather than all in the corner
    assert len(instances) == 3 and boxes.any()
    assert torch.equal(boxes, BitMasks(instances.pred_masks > 0.5).get_bounding_boxes().tensor)


def test_parallel_without_gpu_falls_back_to_one_process(checkpoint, caplog):
    from predictor import VisualizationDemo

    if torch.cuda.is_available():
        pytest.skip("checks the fallback of a machine without GPU")
    demo = VisualizationDemo(_cfg("MODEL.WEIGHTS", checkpoint), parallel=True)
    assert demo.parallel is False
    assert "--parallel needs GPUs" in caplog.text


def test_async_predictor_keeps_order_and_matches_default_predictor(checkpoint):
    from predictor import AsyncPredictor, build_predictor

    cfg = _cfg("MODEL.WEIGHTS", checkpoint)
    images = [_scene(64, 80, shift) for shift in (0, 8, 16)]
    expected = [build_predictor(cfg)(image)["sem_seg"] for image in images]
    predictor = AsyncPredictor(cfg, num_gpus=0)  # one worker process on the CPU
    try:
        for image in images:
            predictor.put(image)
        assert len(predictor) == 3
        results = [predictor.get()["sem_seg"] for _ in images]
    finally:
        predictor.shutdown()
    for got, want in zip(results, expected):
        assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(results[0], results[2])  # in order, not one result three times


# ----------------------------------------------------------------------------- command line
def test_images_folder_glob_missing_and_broken(demo_cli, checkpoint, image_dir, tmp_path, caplog):
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "c.bmp"), _scene(80, 72))
    cv2.imwrite(str(other / "a.jpg"), _scene(64, 64))  # same name as one in image_dir
    broken = tmp_path / "broken.png"
    broken.write_text("not a png")
    caplog.set_level(logging.INFO, logger="demo")
    out = tmp_path / "out"
    rc = demo_cli.main(
        _argv(
            checkpoint,
            "--input", str(image_dir), str(other / "*.bmp"), str(other / "a.jpg"),
            str(tmp_path / "missing.jpg"), str(broken),
            "--output", str(out), "--task", "semantic",
        )
    )
    assert rc == 0
    assert "missing.jpg" in caplog.text and "no such file" in caplog.text
    assert "broken.png" in caplog.text and "cannot read it as an image" in caplog.text
    assert sorted(os.listdir(out)) == ["a.jpg", "a_1.jpg", "b.png", "c.bmp", "gray.png"]
    sources = {name: image_dir / name for name, _, _ in IMAGES}
    sources.update({"c.bmp": other / "c.bmp", "a_1.jpg": other / "a.jpg"})
    for name, source in sources.items():
        image = cv2.imread(str(source))  # 3 channels, also for the grayscale file
        drawing = cv2.imread(str(out / name))
        assert drawing.shape == image.shape, name
        assert drawing.std() > 0 and _mean_change(drawing, image) > 20, name
    assert "Drew 5 of 6 images" in caplog.text


def test_unique_names_one_stem_per_input(demo_cli):
    # drawings and saved predictions (panoptic/a.png, sem_seg/a.png) of an input share its stem
    names = demo_cli.unique_names(["x/a.jpg", "y/a.jpg", "x/a.png", "x/b.gif"])
    assert names == [("a", ".jpg"), ("a_1", ".jpg"), ("a_2", ".png"), ("b", ".gif")]


def test_single_image_to_file_and_file_for_several(
    demo_cli, checkpoint, image_dir, tmp_path, capsys
):
    out = tmp_path / "drawn" / "result.png"
    rc = demo_cli.main(
        _argv(checkpoint, "--input", str(image_dir / "b.png"), "--output", str(out),
              "--task", "instance", "--confidence-threshold", "0")
    )
    assert rc == 0
    assert cv2.imread(str(out)).shape == (72, 64, 3)
    rc = demo_cli.main(_argv(checkpoint, "--input", str(image_dir), "--output", str(out)))
    assert rc == 2
    assert "3 input images" in capsys.readouterr().err


def test_output_over_an_input_is_an_error(demo_cli, checkpoint, image_dir, capsys, no_model):
    rc = demo_cli.main(_argv(checkpoint, "--input", str(image_dir), "--output", str(image_dir)))
    assert rc == 2
    assert "is also an input" in capsys.readouterr().err
    assert len(os.listdir(image_dir)) == len(IMAGES) + 1  # nothing written


def test_no_input_found_exits_1(demo_cli, checkpoint, tmp_path, caplog):
    rc = demo_cli.main(
        _argv(checkpoint, "--input", str(tmp_path / "nothing*.jpg"), "--output", str(tmp_path))
    )
    assert rc == 1
    assert "matches no image" in caplog.text


def _write_video(path, frames=6, fps=12.0, size=(80, 64)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(_scene(size[1], size[0], shift=3 * i))
    writer.release()


def _read_video(path):
    video = cv2.VideoCapture(str(path))
    fps = video.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    video.release()
    return frames, fps


def test_video_keeps_frame_count_size_and_fps(demo_cli, checkpoint, tmp_path, caplog):
    clip = tmp_path / "clip.avi"
    _write_video(clip)
    inputs, _ = _read_video(clip)
    caplog.set_level(logging.INFO, logger="demo")
    out = tmp_path / "out"
    rc = demo_cli.main(_argv(checkpoint, "--video-input", str(clip), "--output", str(out)))
    assert rc == 0
    frames, fps = _read_video(out / "clip.avi")
    assert len(frames) == len(inputs) == 6
    assert fps == pytest.approx(12.0)
    assert all(f.shape == (64, 80, 3) for f in frames)
    # panoptic drawings (MJPG is lossy: compared with the decoded input frames)
    assert all(np.abs(f.astype(int) - i).mean() > 5 for f, i in zip(frames, inputs))
    assert "codec MJPG" in caplog.text


def test_video_writer_codec_fallback(demo_cli, tmp_path):
    writer, path, codec = demo_cli.open_video_writer(str(tmp_path / "v.mp4"), 10.0, (32, 32))
    writer.release()
    assert (path, codec) == (str(tmp_path / "v.mp4"), "mp4v")
    # no codec is known for .xyz: OpenCV's own MJPG writer, next to it
    writer, path, codec = demo_cli.open_video_writer(str(tmp_path / "v.xyz"), 10.0, (32, 32))
    writer.release()
    assert (path, codec) == (str(tmp_path / "v.avi"), "MJPG")


# ----------------------------------------------------------------------------- errors
@pytest.fixture
def no_model(demo_cli, monkeypatch):
    """Errors must come before the model is built."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(demo_cli, "VisualizationDemo", fail)


def test_unwritable_output_is_an_error_before_the_model(
    demo_cli, checkpoint, image_dir, tmp_path, capsys, no_model
):
    a_file = tmp_path / "file"
    a_file.write_text("")
    for output in (a_file / "out", a_file / "out" / "x.png"):
        rc = demo_cli.main(
            _argv(checkpoint, "--input", str(image_dir / "a.jpg"), "--output", str(output))
        )
        assert rc == 2
        err = capsys.readouterr().err
        assert str(a_file) in err and "Not a directory" in err
        assert "Traceback" not in err and err.count("\n") == 1
    clip = tmp_path / "clip.avi"
    _write_video(clip, frames=1)
    video_out = str(a_file / "v.mp4")
    rc = demo_cli.main(_argv(checkpoint, "--video-input", str(clip), "--output", video_out))
    assert rc == 2
    assert str(a_file) in capsys.readouterr().err


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write to read-only folders"
)
def test_output_without_permission(demo_cli, checkpoint, image_dir, tmp_path, capsys, no_model):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = demo_cli.main(_argv(checkpoint, "--input", str(image_dir), "--output", str(locked)))
    finally:
        locked.chmod(0o700)
    assert rc == 2
    err = capsys.readouterr().err
    assert str(locked) in err and "ermission denied" in err


def test_bad_video_is_an_error(demo_cli, checkpoint, tmp_path, capsys, no_model):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    for video in (fake, tmp_path / "missing.mp4"):
        rc = demo_cli.main(
            _argv(checkpoint, "--video-input", str(video), "--output", str(tmp_path))
        )
        assert rc == 2
        assert str(video) in capsys.readouterr().err


def test_task_off_in_config_is_an_error(
    demo_cli, checkpoint, image_dir, tmp_path, capsys, no_model
):
    rc = demo_cli.main(
        _argv(
            checkpoint, "--input", str(image_dir), "--output", str(tmp_path), "--task", "semantic",
            config=INSTANCE_CONFIG,
        )
    )
    assert rc == 2
    assert "SEMANTIC_ON is False" in capsys.readouterr().err


def test_no_display_needs_output(demo_cli, checkpoint, image_dir, capsys, monkeypatch, no_model):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    rc = demo_cli.main(_argv(checkpoint, "--input", str(image_dir)))
    assert rc == 2
    assert "give --output" in capsys.readouterr().err


def test_mismatched_checkpoint_lists_the_keys(demo_cli, checkpoint, image_dir, tmp_path, capsys):
    state = torch.load(checkpoint, map_location="cpu")["model"]
    state.pop("sem_seg_head.predictor.class_embed.bias")
    state["sem_seg_head.predictor.extra.weight"] = torch.zeros(2)
    state["sem_seg_head.predictor.query_feat.weight"] = torch.zeros(5, 128)
    bad = tmp_path / "bad.pth"
    torch.save({"model": state}, bad)
    rc = demo_cli.main(
        _argv(checkpoint, "--input", str(image_dir), "--output", str(tmp_path / "out"),
              opts=("MODEL.WEIGHTS", str(bad)))
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    # mask2former.checkpoint lists each kind under its own heading, in this order
    _, rest = err.split("missing in the checkpoint")
    missing, rest = rest.split("unexpected in the checkpoint")
    unexpected, wrong_shape = rest.split("wrong shape (")
    assert "sem_seg_head.predictor.class_embed.bias" in missing
    assert "sem_seg_head.predictor.extra.weight" in unexpected
    assert "query_feat.weight: checkpoint (5, 128) vs model (8, 128)" in wrong_shape


def test_missing_checkpoint_is_an_error(demo_cli, checkpoint, image_dir, tmp_path, capsys):
    rc = demo_cli.main(
        _argv(checkpoint, "--input", str(image_dir), "--output", str(tmp_path),
              opts=("MODEL.WEIGHTS", str(tmp_path / "none.pth")))
    )
    assert rc == 2
    assert "none.pth' does not exist" in capsys.readouterr().err


def bad_hf_directories(root):
    """(directory, what the error says) for Hugging Face directories that cannot be loaded."""
    other, no_weights = root / "swin_classifier", root / "no_weights"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "swin", "architectures": ["SwinModel"]}')
    no_weights.mkdir()
    (no_weights / "config.json").write_text(
        '{"model_type": "mask2former", "architectures": ["Mask2FormerForUniversalSegmentation"]}'
    )
    return [(other, "model_type 'swin'"), (no_weights, "no weights (model.safetensors")]


def test_unusable_hf_directory_is_one_message(demo_cli, checkpoint, image_dir, tmp_path, capsys):
    for directory, says in bad_hf_directories(tmp_path):
        rc = demo_cli.main(
            _argv(checkpoint, "--input", str(image_dir), "--output", str(tmp_path / "out"),
                  opts=("MODEL.WEIGHTS", str(directory)))
        )
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith(f"demo.py: error: MODEL.WEIGHTS: {directory}")
        assert says in err and err.count("\n") == 1


def test_script_in_a_subprocess(checkpoint, image_dir, tmp_path):
    """As a user runs it: a fresh process, no display, default task (panoptic)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(REPO, "demo", "demo.py")] + _argv(
        checkpoint, "--input", str(image_dir / "gray.png"), str(image_dir / "nope.png"),
        "--output", str(out),
    )
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nope.png" in proc.stdout + proc.stderr
    drawing = cv2.imread(str(out / "gray.png"))
    image = cv2.imread(str(image_dir / "gray.png"))
    assert drawing.shape == (64, 64, 3)
    assert _mean_change(drawing, image) > 5
