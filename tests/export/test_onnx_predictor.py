"""demo/onnx_predictor.py on a tiny exported panoptic model: in a process where importing torch
or detectron2 fails it draws every image and its outputs are those of demo/demo.py's predictor
(detectron2's DefaultPredictor: test-time resize, MaskFormer) on the same image, from the
export's metadata alone (semantic argmax on >= 99.9 % of pixels, the same panoptic segments,
instance scores within 1e-3); its resize is Pillow's, exactly; a model folder that does not fit
its metadata and an unreadable image are named."""
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.engine import DefaultPredictor
from mask2former.export.exporter import export, write_deployment_info
from mask2former.export.model import ExportableMaskFormer
from model_utils import REPO
from test_export import tiny_model

CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
SCRIPT = os.path.join(REPO, "demo", "onnx_predictor.py")
MIN_SIZE, MAX_SIZE = 64, 128
# (height, width): one at the test size, one the predictor enlarges (to 64x90), one it reduces
IMAGE_SIZES = {"at_size": (64, 96), "enlarged": (50, 70), "reduced": (150, 230)}
# a dataset of the tiny model's 5 classes: 3 things, then 2 stuff
DATASET = "onnx_predictor_test_classes"
CLASS_NAMES = ["disk", "box", "star", "sky", "grass"]
CLASS_COLORS = [[220, 20, 60], [0, 0, 142], [250, 170, 30], [70, 130, 180], [107, 142, 35]]
IS_THING = [True, True, True, False, False]
MODEL_OPTS = ["DATASETS.TRAIN", f"('{DATASET}',)", "DATASETS.TEST", f"('{DATASET}',)",
              "INPUT.MIN_SIZE_TEST", str(MIN_SIZE), "INPUT.MAX_SIZE_TEST", str(MAX_SIZE)]


def _load_script():
    spec = importlib.util.spec_from_file_location("onnx_predictor", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def register_classes():
    metadata = MetadataCatalog.get(DATASET)
    if metadata.get("stuff_classes") is None:
        metadata.set(stuff_classes=CLASS_NAMES, stuff_colors=CLASS_COLORS, thing_classes=CLASS_NAMES[:3],
                     thing_dataset_id_to_contiguous_id={10 + i: i for i in range(3)})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, cfg, export folder, {name: image path})."""
    register_classes()
    root = tmp_path_factory.mktemp("onnx_predictor")
    model, cfg = tiny_model(CONFIG, MODEL_OPTS)
    sample = torch.randint(0, 256, (1, 3, 64, 96)).float()
    model_dir = str(root / "model")
    with torch.no_grad():
        export(ExportableMaskFormer(model), (sample - model.pixel_mean) / model.pixel_std, "onnx", model_dir)
    write_deployment_info(model, cfg, model_dir)
    rng = np.random.default_rng(9)  # a seed whose images give panoptic segments
    images = {}
    for name, (h, w) in IMAGE_SIZES.items():
        images[name] = str(root / f"{name}.png")
        # smooth images: a few large regions, as in a photo
        coarse = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        cv2.imwrite(images[name], cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR))
    return model, cfg, model_dir, images


def run_without_torch(args):
    """The predictor's command line in a fresh process where ``import torch`` and
    ``import detectron2`` fail."""
    code = (
        "import sys, runpy\n"
        "sys.modules['torch'] = sys.modules['detectron2'] = None\n"
        f"sys.argv = [{SCRIPT!r}] + {list(args)!r}\n"
        f"runpy.run_path({SCRIPT!r}, run_name='__main__')\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_predictor_without_torch_gives_the_demos_outputs(exported, tmp_path):
    """The sizes, channel order, thresholds and classes come from export_info.json alone."""
    model, cfg, model_dir, images = exported
    out = str(tmp_path / "out")
    result = run_without_torch(["--model", model_dir, "--input", *images.values(), "--output", out,
                                "--save-outputs"])
    assert result.returncode == 0, result.stderr
    demo_predictor = DefaultPredictor(cfg)  # what demo/demo.py runs, with the exported weights
    demo_predictor.model.load_state_dict(model.state_dict())
    for name, path in images.items():
        image = cv2.imread(path)
        drawing = cv2.imread(os.path.join(out, name + ".png"))
        assert drawing.shape == image.shape and not np.array_equal(drawing, image)
        got = np.load(os.path.join(out, name + ".npz"))
        expected = demo_predictor(image)
        assert got["sem_seg"].shape == tuple(expected["sem_seg"].shape)
        assert got["sem_seg"].shape[1:] == image.shape[:2]
        agree = (got["sem_seg"].argmax(0) == expected["sem_seg"].argmax(0).numpy()).mean()
        assert agree >= 0.999, (name, agree)
        e_ids, e_segments = expected["panoptic_seg"]
        assert len(e_segments) > 0
        assert json.loads(str(got["segments_info"])) == e_segments
        assert (got["panoptic_seg"] == e_ids.numpy()).mean() >= 0.999
        instances = expected["instances"]
        order = torch.argsort(instances.scores, descending=True)
        np.testing.assert_array_equal(got["instances_pred_classes"], instances.pred_classes[order].numpy())
        np.testing.assert_allclose(got["instances_scores"], instances.scores[order].numpy(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("size", [(50, 70), (70, 50), (64, 96), (480, 640), (100, 1000)])
def test_resized_shape_is_detectron2s(size):
    expected = ResizeShortestEdge.get_output_shape(*size, MIN_SIZE, MAX_SIZE)
    assert _load_script().resized_shape(*size, MIN_SIZE, MAX_SIZE) == expected


@pytest.mark.parametrize(
    "size, new_size",
    [((50, 70), (64, 90)), ((150, 230), (64, 98)), ((480, 640), (200, 267)), ((37, 41), (37, 200)),
     ((333, 20), (101, 20)), ((17, 19), (256, 13))],
)
def test_resize_is_pillows_bilinear(size, new_size):
    """Equal to the resize of detectron2's ResizeShortestEdge (Pillow, bilinear), every byte."""
    image = np.random.default_rng(size[0]).integers(0, 256, (*size, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(image).resize(new_size[::-1], Image.BILINEAR))
    np.testing.assert_array_equal(_load_script().pillow_bilinear_resize(image, *new_size), expected)


def test_export_info_carries_what_the_demo_needs(exported):
    model, cfg, model_dir, _ = exported
    with open(os.path.join(model_dir, "export_info.json")) as f:
        info = json.load(f)
    assert info["input_format"] == cfg.INPUT.FORMAT == "RGB" and info["size_divisibility"] == 32
    assert info["pixel_mean"] == model.pixel_mean.flatten().tolist()
    assert info["pixel_std"] == model.pixel_std.flatten().tolist()
    assert (info["min_size_test"], info["max_size_test"]) == (MIN_SIZE, MAX_SIZE)
    assert (info["num_queries"], info["num_classes"]) == (8, 5)
    assert info["settings"] == dataclasses.asdict(model.postprocessor.settings)
    assert info["settings"]["panoptic_on"] and info["settings"]["instance_on"] and info["settings"]["semantic_on"]
    assert info["dataset"] == DATASET and info["class_names"] == CLASS_NAMES
    assert info["class_colors"] == CLASS_COLORS and info["is_thing"] == IS_THING


def _copy(model_dir, tmp_path):
    copy = str(tmp_path / "model")
    shutil.copytree(model_dir, copy)
    return copy


def _edit_info(model_dir, edit):
    path = os.path.join(model_dir, "export_info.json")
    with open(path) as f:
        info = json.load(f)
    edit(info)
    with open(path, "w") as f:
        json.dump(info, f)


def _one_more_class(info):
    info["num_classes"] += 1
    for key in ("is_thing", "class_names", "class_colors"):
        info[key].append(info[key][-1])


@pytest.mark.parametrize(
    "break_folder, named",
    [
        (lambda d: _edit_info(d, _one_more_class),
         ["model.onnx does not fit export_info.json", "class logits", "num_classes 6", "expected (?, 8, 7)"]),
        (lambda d: _edit_info(d, lambda info: info.update(num_queries=9)),
         ["model.onnx does not fit export_info.json", "num_queries 9", "(1, 8, 6)"]),
        (lambda d: _edit_info(d, lambda info: info["is_thing"].append(False)),
         ["export_info.json: is_thing has 6 entries, num_classes is 5"]),
        (lambda d: _edit_info(d, lambda info: info.update(class_names=["a", "b"])),
         ["export_info.json: class_names has 2 entries, num_classes is 5"]),
        (lambda d: _edit_info(d, lambda info: info.pop("is_thing")),
         ["export_info.json: panoptic inference is on but is_thing"]),
        (lambda d: _edit_info(d, lambda info: info.pop("pixel_std")),
         ["export_info.json: missing key(s) pixel_std"]),
        (lambda d: open(os.path.join(d, "model.onnx"), "wb").write(b"not a graph"),
         ["model.onnx: not a loadable ONNX model"]),
        (lambda d: open(os.path.join(d, "postprocess.onnx"), "wb").write(b"not a graph"),
         ["postprocess.onnx: not a loadable ONNX model"]),
        (lambda d: shutil.copy(os.path.join(d, "model.onnx"), os.path.join(d, "postprocess.onnx")),
         ["postprocess.onnx: inputs ['image'] and outputs ['pred_logits', 'pred_masks'], expected"]),
    ],
)
def test_model_folder_not_fitting_its_metadata_is_named(exported, tmp_path, capsys, break_folder, named):
    _, _, model_dir, images = exported
    broken = _copy(model_dir, tmp_path)
    break_folder(broken)
    status = _load_script().main(["--model", broken, "--input", images["at_size"], "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for text in named:
        assert text in err, err


def test_dense_step_graph_gives_numpys_outputs(exported, tmp_path):
    """The export writes postprocess.onnx and the predictor runs it; a folder without it (an
    older export) gets NumPy's dense step, with the same outputs."""
    _, _, model_dir, images = exported
    assert os.path.isfile(os.path.join(model_dir, "postprocess.onnx"))
    without = _copy(model_dir, tmp_path)
    os.remove(os.path.join(without, "postprocess.onnx"))
    script = _load_script()
    with_graph, numpy_only = script.OnnxPredictor(model_dir), script.OnnxPredictor(without)
    assert isinstance(with_graph.dense_block, script.OnnxDenseBlock)
    assert numpy_only.dense_block is not with_graph.dense_block and callable(numpy_only.dense_block)
    for path in images.values():
        image = cv2.imread(path)
        got, expected = with_graph(image), numpy_only(image)
        np.testing.assert_allclose(got["sem_seg"], expected["sem_seg"], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(got["panoptic_seg"][0], expected["panoptic_seg"][0])
        assert got["panoptic_seg"][1] == expected["panoptic_seg"][1]
        for key in ("pred_classes", "pred_masks", "pred_boxes"):
            np.testing.assert_array_equal(got["instances"][key], expected["instances"][key])
        np.testing.assert_allclose(got["instances"]["scores"], expected["instances"]["scores"], rtol=0, atol=1e-5)


def test_unreadable_image_is_named_and_the_others_drawn(exported, tmp_path, capsys):
    _, _, model_dir, images = exported
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    out = tmp_path / "out"
    status = _load_script().main(["--model", model_dir, "--input", str(broken), images["at_size"],
                                  "--output", str(out), "--min-size", str(MIN_SIZE)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.strip() == f"error: {broken}: cannot read this file as an image"
    assert os.listdir(out) == ["at_size.png"]


def test_no_thing_instance_gives_empty_instances():
    """Every query's best classes are stuff: instance inference keeps none."""
    postprocess = _load_script().load_postprocess_module().postprocess
    settings = SimpleNamespace(semantic_on=False, panoptic_on=False, instance_on=True, object_mask_threshold=0.8,
                               overlap_threshold=0.8, test_topk_per_image=2,
                               sem_seg_postprocess_before_inference=True)
    mask_cls = np.array([[0.0, 9.0, 0.0], [0.0, 9.0, 0.0]])  # K = 2: class 0 thing, class 1 stuff
    found = postprocess(mask_cls, np.ones((2, 4, 4)), (16, 16), (16, 16), (16, 16), settings,
                        np.array([True, False]))["instances"]
    assert found["scores"].shape == (0,) and found["pred_masks"].shape == (0, 16, 16)
    assert found["pred_boxes"].shape == (0, 4)


def test_command_line_keeps_freed_memory_as_the_demo_does(monkeypatch):
    """The allocator module is found in the repository layout (without torch); its switch turns
    it off."""
    script = _load_script()
    allocator = script._load_file(script.ALLOCATOR_FILE, "utils")
    assert allocator is not None and allocator.ENV_SWITCH == "MASK2FORMER_KEEP_FREED_MEMORY"
    monkeypatch.setenv(allocator.ENV_SWITCH, "0")
    assert script.keep_freed_memory() is False
