"""MODEL.WEIGHTS naming a Hugging Face save_pretrained directory (mask2former/checkpoint.py)."""

import importlib
import os
import sys

import pytest
import torch

from detectron2.modeling import build_model

from mask2former.checkpoint import (
    CheckpointMismatchError,
    Mask2FormerCheckpointer,
    load_model_weights,
)
from mask2former.hf_conversion import HFConversionError
from model_utils import TESTS

pytest.importorskip("transformers")

# the random HF model, its conversion by tools/convert_hf_to_d2.py and the padded test input
# of the conversion tests; the fixtures run again for this module
if os.path.join(TESTS, "tools") not in sys.path:
    sys.path.append(os.path.join(TESTS, "tools"))
hf_conversion_tests = importlib.import_module("test_hf_conversion")
hf_model_dir = hf_conversion_tests.hf_model_dir
converted = hf_conversion_tests.converted
NUM_CLASSES = hf_conversion_tests.NUM_CLASSES


def _head_outputs(model, x):
    with torch.no_grad():
        return model.sem_seg_head(model.backbone(x))


@pytest.mark.parametrize("match", ["exact", "init"])
def test_hf_directory_loads_as_the_converted_checkpoint(hf_model_dir, converted, match):
    _, hf_dir = hf_model_dir
    _, cfg, from_pth = converted
    model = build_model(cfg).eval()
    if match == "exact":
        load_model_weights(model, hf_dir, cfg=cfg)
    else:  # as ReliableTrainer.resume_or_load loads MODEL.WEIGHTS
        checkpointer = Mask2FormerCheckpointer(model, cfg=cfg)
        assert checkpointer.load(hf_dir, checkpointables=[], match="init") == {}
        assert checkpointer.last_report.is_exact()
    expected = from_pth.state_dict()
    assert sorted(model.state_dict()) == sorted(expected)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    x = hf_conversion_tests._padded_input(model, 96, 128)
    ours, theirs = _head_outputs(model, x), _head_outputs(from_pth, x)
    assert torch.equal(ours["pred_logits"], theirs["pred_logits"])
    assert torch.equal(ours["pred_masks"], theirs["pred_masks"])


def test_hf_directory_of_another_config_names_the_keys(hf_model_dir, converted):
    _, hf_dir = hf_model_dir
    cfg = converted[1].clone()
    cfg.defrost()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 7
    model = build_model(cfg).eval()
    with pytest.raises(CheckpointMismatchError) as error:
        load_model_weights(model, hf_dir, cfg=cfg)
    message = str(error.value)
    assert f"{hf_dir} (full-model checkpoint" in message
    assert "0 missing, 0 unexpected, 3 wrong-shape" in message
    assert (
        "sem_seg_head.predictor.class_embed.weight: checkpoint (134, 256) vs model (8, 256)"
        in message
    )
    differences = [line.strip() for line in message.splitlines() if "in the config" in line]
    assert differences == [
        f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = 7 in the config, {NUM_CLASSES} in the Hugging Face "
        "checkpoint"
    ]
    # without the config the keys still tell
    with pytest.raises(CheckpointMismatchError, match="3 wrong-shape") as error:
        load_model_weights(model, hf_dir)
    assert "in the config" not in str(error.value)
    # fine-tuning on 7 classes from the HF weights: only the classifier is left out
    load_model_weights(model, hf_dir, match="init", cfg=cfg)
    expected = converted[2].state_dict()
    loaded = model.state_dict()
    assert torch.equal(loaded["sem_seg_head.predictor.mask_embed.layers.0.weight"],
                       expected["sem_seg_head.predictor.mask_embed.layers.0.weight"])  # fmt: skip
    assert loaded["sem_seg_head.predictor.class_embed.weight"].shape == (8, 256)


def test_directory_that_is_not_an_hf_checkpoint_is_one_clear_error(converted, tmp_path):
    model = converted[2]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HFConversionError, match=f"{empty}: no config.json"):
        load_model_weights(model, str(empty))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "swin", "architectures": ["SwinModel"]}')
    with pytest.raises(HFConversionError, match="config.json: model_type 'swin'.*not Mask2Former"):
        load_model_weights(model, str(other))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_weights(model, str(tmp_path / "nowhere"))
