"""tools/deploy/export_model.py: a tiny model exported with its weights and a sample image
computes the model's logits at another size, and with export_info.json the NumPy
post-processing gives the model's outputs; a config that cannot be exported is a one-line error
naming the key."""
import importlib.util
import json
import os
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from detectron2.modeling import build_model
from mask2former.export.model import ExportableMaskFormer
from mask2former.export.postprocess_numpy import postprocess
from model_utils import REPO, load_cfg, tiny_opts

CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
SMALL_TEST_SIZE = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]


def _tool():
    path = os.path.join(REPO, "tools", "deploy", "export_model.py")
    spec = importlib.util.spec_from_file_location("export_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_exports_weights_that_compute_the_models_logits(tmp_path):
    torch.manual_seed(3)
    model = build_model(load_cfg(CONFIG, tiny_opts())).eval()
    weights = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    image = str(tmp_path / "sample.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
    out = str(tmp_path / "out")
    argv = ["--config-file", os.path.join(REPO, CONFIG), "--format", "onnx", "--export-method",
            "tracing", "--output", out, "--sample-image", image,
            *tiny_opts(), *SMALL_TEST_SIZE, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights]
    assert _tool().main(argv) == 0

    x = torch.randn(1, 3, 90, 110)
    with torch.no_grad():
        expected = ExportableMaskFormer(model)(x)
    session = onnxruntime.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})
    for e, g in zip(expected, got):
        assert g.shape == tuple(e.shape)
        assert np.abs(g - e.numpy()).max() <= 1e-3

    with open(os.path.join(out, "export_info.json")) as f:
        info = json.load(f)
    assert info["pixel_mean"] == model.pixel_mean.flatten().tolist() and info["size_divisibility"] == 32
    assert (info["min_size_test"], info["max_size_test"], info["num_queries"], info["num_classes"]) == (64, 128, 8, 5)
    # the dataset's 133 classes do not fit the shrunk model's 5: no names, but the thing classes
    assert info["dataset"] == "coco_2017_val_panoptic_with_sem_seg" and "class_names" not in info
    size, padded = (90, 110), (96, 128)
    results = postprocess(got[0][0], got[1][0], padded, size, size, SimpleNamespace(**info["settings"]),
                          np.array(info["is_thing"]))
    with torch.no_grad():
        reference = model([{"image": x[0] * model.pixel_std + model.pixel_mean}])[0]
    assert sorted(results) == sorted(reference) == ["instances", "panoptic_seg", "sem_seg"]
    agree = (results["sem_seg"].argmax(0) == reference["sem_seg"].argmax(0).numpy()).mean()
    assert agree >= 0.999
    assert results["panoptic_seg"][1] == reference["panoptic_seg"][1]


def test_tool_rejects_a_config_it_cannot_export(tmp_path, capsys):
    argv = ["--config-file", os.path.join(REPO, CONFIG), "--format", "torchscript",
            "--output", str(tmp_path), "MODEL.META_ARCHITECTURE", "SemanticSegmentor"]
    with pytest.raises(SystemExit) as e:
        _tool().main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "cannot be exported" in err and "MODEL.META_ARCHITECTURE = 'SemanticSegmentor'" in err
    assert not os.listdir(tmp_path)


def test_tool_names_a_video_config_as_not_exportable_before_building_anything(tmp_path, capsys, monkeypatch):
    """A video config: its own keys (unknown to the image config) do not hide what is not
    exportable, and no model is built."""
    config = tmp_path / "video.yaml"
    config.write_text(
        f"_BASE_: {os.path.join(REPO, CONFIG)}\n"
        "MODEL:\n"
        "  META_ARCHITECTURE: VideoMaskFormer\n"
        "  MASK_FORMER:\n"
        "    TRANSFORMER_DECODER_NAME: VideoMultiScaleMaskedTransformerDecoder\n"
        "INPUT:\n"
        "  SAMPLING_FRAME_NUM: 2\n"
        "DATASETS:\n"
        "  TRAIN: ('ytvis_2019_train',)\n"
    )
    tool = _tool()

    def no_build(cfg):
        raise AssertionError("a model was built")

    monkeypatch.setattr(tool, "build_model", no_build)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        tool.main(["--config-file", str(config), "--format", "onnx", "--output", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(config) in err and "cannot be exported" in err
    assert "MODEL.META_ARCHITECTURE = 'VideoMaskFormer'" in err
    assert "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = 'VideoMultiScaleMaskedTransformerDecoder'" in err
    assert "SAMPLING_FRAME_NUM" not in err and not out.exists()


def test_tool_override_of_a_component_is_checked(tmp_path, capsys):
    argv = ["--config-file", os.path.join(REPO, CONFIG), "--output", str(tmp_path / "out"),
            "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "BasePixelDecoder"]
    with pytest.raises(SystemExit):
        _tool().main(argv)
    assert "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = 'BasePixelDecoder'" in capsys.readouterr().err
