"""mask2former.checkpoint: atomic saves, the loading rules and their errors, inspect_checkpoint."""

import copy
import importlib
import os
import pickle
import stat
import sys

import numpy as np
import pytest
import torch
from torch import nn

from detectron2.modeling import build_model

from mask2former.checkpoint import (
    CheckpointMismatchError,
    CheckpointReadError,
    Mask2FormerCheckpointer,
    inspect_model_weights,
    load_model_weights,
)

from model_utils import REPO, load_cfg

SYNTHETIC_CONFIG = "configs/synthetic/panoptic.yaml"
COCO_R50_CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
CLASS_KEYS = (
    "sem_seg_head.predictor.class_embed.weight",
    "sem_seg_head.predictor.class_embed.bias",
)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- saving
def _saved(tmp_path):
    """A checkpointer of a small model, with model_0000000 saved and tagged."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    checkpointer = Mask2FormerCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000000", iteration=0)
    return model, checkpointer


def _files(directory):
    return sorted(os.listdir(directory))


def test_save_writes_a_complete_file_and_the_tag(tmp_path):
    model, checkpointer = _saved(tmp_path)
    assert _files(tmp_path) == ["last_checkpoint", "model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"
    data = torch.load(tmp_path / "model_0000000.pth")
    assert data["iteration"] == 0 and torch.equal(data["model"]["weight"], model.weight)
    # the usual permissions of a new file (the temporary file is not created 0600)
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE(os.stat(tmp_path / "model_0000000.pth").st_mode)
    assert mode == 0o666 & ~umask


def test_failing_torch_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, checkpointer = _saved(tmp_path)
    before = (tmp_path / "model_0000000.pth").read_bytes()

    def save_half_then_fail(obj, f, *args, **kwargs):
        f.write(b"\x80\x02half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save("model_0000001", iteration=1)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save("model_0000000", iteration=0)  # overwriting is no different
    assert _files(tmp_path) == ["last_checkpoint", "model_0000000.pth"]  # no temporary file left
    assert (tmp_path / "model_0000000.pth").read_bytes() == before
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000000.pth")


def test_failing_tag_write_keeps_the_previous_tag(tmp_path, monkeypatch):
    _, checkpointer = _saved(tmp_path)
    real_replace = os.replace

    def replace_but_not_the_tag(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_but_not_the_tag)
    with pytest.raises(OSError, match="I/O error"):
        checkpointer.save("model_0000001", iteration=1)
    # the new file is complete; the tag still names the previous, complete one
    assert _files(tmp_path) == ["last_checkpoint", "model_0000000.pth", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"


def test_temp_files_of_a_killed_save_are_never_used_and_are_removed(tmp_path):
    _, checkpointer = _saved(tmp_path)
    # what a SIGKILL during the next save would leave
    partial = tmp_path / "model_0000001.pth.4242-0a1b2c3d.partial"
    partial.write_bytes(b"\x80\x02trunc")
    partial_tag = tmp_path / "last_checkpoint.4242-0a1b2c3d.partial"
    partial_tag.write_text("model_0000001.pth")
    (tmp_path / "notes.partial").write_text("not ours")

    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000000.pth")
    assert checkpointer.get_all_checkpoint_files() == [str(tmp_path / "model_0000000.pth")]
    assert checkpointer.remove_stale_temp_files() == sorted([str(partial_tag), str(partial)])
    assert _files(tmp_path) == ["last_checkpoint", "model_0000000.pth", "notes.partial"]


def test_disable_saving_makes_save_a_no_op(tmp_path):
    _, checkpointer = _saved(tmp_path)
    checkpointer.disable_saving("training failed")
    checkpointer.save("model_final", iteration=9)
    assert _files(tmp_path) == ["last_checkpoint", "model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"


# ----------------------------------------------------------------------------- loading
@pytest.fixture(scope="module")
def synthetic_model():
    torch.manual_seed(0)
    return build_model(load_cfg(SYNTHETIC_CONFIG))


def _fresh(model):
    # copying costs less than building
    return copy.deepcopy(model)


def _random_state(model, seed=1):
    """Weights unlike any fresh model's, so that a load that does nothing can't pass."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v + 1
        for k, v in model.state_dict().items()
    }


def _assert_loaded(model, state):
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def _write(path, kind, state):
    if kind == "pth_model":
        torch.save({"model": state, "iteration": 5}, path)
    elif kind == "pth_bare":
        torch.save(state, path)
    else:  # detectron2's model zoo layout
        with open(path, "wb") as f:
            numpy_state = {k: v.numpy() for k, v in state.items()}
            pickle.dump({"model": numpy_state, "__author__": "test"}, f)


@pytest.mark.parametrize(
    "kind, suffix", [("pth_model", ".pth"), ("pth_bare", ".pth"), ("pkl_numpy", ".pkl")]
)
def test_reference_layouts_load_exactly(synthetic_model, tmp_path, kind, suffix):
    state = _random_state(_fresh(synthetic_model))
    path = str(tmp_path / f"weights{suffix}")
    _write(path, kind, state)
    model = _fresh(synthetic_model)
    load_model_weights(model, path)  # exact: raises on any missing / unexpected / wrong key
    _assert_loaded(model, state)
    assert inspect_model_weights(_fresh(synthetic_model), path).is_exact()


def test_coco_r50_panoptic_pkl_loads_into_a_fresh_model(tmp_path):
    cfg = load_cfg(COCO_R50_CONFIG)
    torch.manual_seed(0)
    source = build_model(cfg)
    path = str(tmp_path / "model_final.pkl")
    _write(path, "pkl_numpy", source.state_dict())
    fresh = build_model(cfg)
    key = "sem_seg_head.predictor.class_embed.weight"
    assert fresh.state_dict()[key].shape == (134, 256)  # 133 COCO panoptic classes + no object
    assert not torch.equal(fresh.state_dict()[key], source.state_dict()[key])
    load_model_weights(fresh, path)
    for k in (
        key,
        "backbone.res5.2.conv3.weight",
        "sem_seg_head.pixel_decoder.mask_features.weight",
    ):
        assert torch.equal(fresh.state_dict()[k], source.state_dict()[k]), k


def _missable_keys(model):
    # BatchNorm fills in an absent num_batches_tracked itself: it is never reported missing
    return sorted(k for k in model.state_dict() if not k.endswith("num_batches_tracked"))


def _broken_state(model, num_missing=0, num_unexpected=0, wrong_shape=()):
    state = _random_state(model)
    for k in _missable_keys(model)[:num_missing]:
        del state[k]
    for i in range(num_unexpected):
        state[f"extra.layer{i}.weight"] = torch.zeros(2)
    for k in wrong_shape:
        state[k] = torch.zeros(3, 5)
    return state


def test_mismatch_error_names_the_file_and_lists_the_keys(synthetic_model, tmp_path):
    model = _fresh(synthetic_model)
    wrong = "sem_seg_head.predictor.query_feat.weight"
    state = _broken_state(model, num_missing=14, num_unexpected=2, wrong_shape=[wrong])
    path = str(tmp_path / "broken.pth")
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        load_model_weights(_fresh(synthetic_model), path)
    message = str(e.value)
    assert isinstance(e.value, ValueError)
    assert path in message
    assert "14 missing, 2 unexpected, 1 wrong-shape" in message
    missing = _missable_keys(model)[:14]
    assert all(k in message for k in missing[:10]) and missing[10] not in message
    assert "... and 4 more" in message
    assert "extra.layer0.weight" in message and "extra.layer1.weight" in message
    assert f"{wrong}: checkpoint (3, 5) vs model (20, 128)" in message

    report = inspect_model_weights(_fresh(synthetic_model), path)
    assert sorted(report.missing) == missing
    assert sorted(report.unexpected) == ["extra.layer0.weight", "extra.layer1.weight"]
    assert report.wrong_shapes == [(wrong, (3, 5), (20, 128))]


def test_init_rule_accepts_a_backbone_only_checkpoint(synthetic_model, tmp_path):
    model = _fresh(synthetic_model)
    backbone = {k: v for k, v in _random_state(model).items() if k.startswith("backbone.")}
    path = str(tmp_path / "backbone.pth")
    torch.save({"model": backbone}, path)

    fresh = _fresh(synthetic_model)
    load_model_weights(fresh, path, match="init")
    for k, v in backbone.items():
        assert torch.equal(fresh.state_dict()[k], v), k
    # evaluation needs the head too
    with pytest.raises(CheckpointMismatchError, match="backbone-only checkpoint can only"):
        load_model_weights(_fresh(synthetic_model), path)


def test_init_rule_accepts_a_pretrained_pkl_matched_by_heuristics(synthetic_model, tmp_path):
    model = _fresh(synthetic_model)
    # an ImageNet-style file: backbone names without the "backbone." prefix, plus a classifier
    pretrained = {
        k[len("backbone.") :]: v.numpy()
        for k, v in _random_state(model).items()
        if k.startswith("backbone.")
    }
    pretrained["fc.weight"] = np.zeros((1000, 512), dtype=np.float32)
    path = str(tmp_path / "R-18.pkl")
    with open(path, "wb") as f:
        pickle.dump(
            {"model": pretrained, "__author__": "torchvision", "matching_heuristics": True}, f
        )
    fresh = _fresh(synthetic_model)
    load_model_weights(fresh, path, match="init")
    key = "backbone.res4.1.conv2.weight"
    assert torch.equal(fresh.state_dict()[key], torch.from_numpy(pretrained[key[9:]]))

    # a file of which nothing fits is not a backbone for this model
    with open(path, "wb") as f:
        unrelated = {"foo.weight": np.zeros((3, 3), dtype=np.float32)}
        pickle.dump({"model": unrelated, "__author__": "x", "matching_heuristics": True}, f)
    with pytest.raises(CheckpointMismatchError, match="missing"):
        load_model_weights(_fresh(synthetic_model), path, match="init")


def test_init_rule_reinitialises_only_the_classifier(synthetic_model, tmp_path):
    model = _fresh(synthetic_model)
    # a full model trained with another number of classes
    state = _random_state(model)
    state[CLASS_KEYS[0]] = torch.zeros(4, 128)
    state[CLASS_KEYS[1]] = torch.zeros(4)
    state["criterion.empty_weight"] = torch.ones(4)
    path = str(tmp_path / "other_classes.pth")
    torch.save({"model": state}, path)
    fresh = _fresh(synthetic_model)
    load_model_weights(fresh, path, match="init")
    assert torch.equal(
        fresh.state_dict()["backbone.stem.conv1.weight"], state["backbone.stem.conv1.weight"]
    )
    assert fresh.state_dict()[CLASS_KEYS[0]].shape == (9, 128)  # kept the model's own
    with pytest.raises(CheckpointMismatchError, match="3 wrong-shape"):
        load_model_weights(_fresh(synthetic_model), path)

    # any other wrong shape, or a missing key of a full model, is an error even for "init"
    wrong = _broken_state(model, wrong_shape=["sem_seg_head.predictor.query_feat.weight"])
    torch.save({"model": wrong}, path)
    with pytest.raises(CheckpointMismatchError, match="query_feat"):
        load_model_weights(_fresh(synthetic_model), path, match="init")
    torch.save({"model": _broken_state(model, num_missing=1)}, path)
    with pytest.raises(CheckpointMismatchError, match="1 missing"):
        load_model_weights(_fresh(synthetic_model), path, match="init")


def test_unreadable_or_absent_files_are_named(synthetic_model, tmp_path):
    model = _fresh(synthetic_model)
    path = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict()}, path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointReadError, match="truncated.pth"):
        load_model_weights(model, str(truncated))
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_model_weights(model, str(tmp_path / "nowhere.pth"))
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        load_model_weights(model, "")


# ----------------------------------------------------------------------------- inspect tool
@pytest.fixture(scope="module")
def inspect_tool():
    # a script: `python tools/inspect_checkpoint.py` puts tools/ on sys.path
    if os.path.join(REPO, "tools") not in sys.path:
        sys.path.append(os.path.join(REPO, "tools"))
    return importlib.import_module("inspect_checkpoint")


def test_inspect_checkpoint_exit_codes_and_report(synthetic_model, inspect_tool, tmp_path, capsys):
    config = os.path.join(REPO, SYNTHETIC_CONFIG)
    model = _fresh(synthetic_model)
    good = str(tmp_path / "good.pth")
    torch.save({"model": model.state_dict()}, good)
    assert inspect_tool.main(["--config-file", config, good, "MODEL.DEVICE", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "0 missing, 0 unexpected, 0 wrong-shape" in out
    assert out.strip().splitlines()[-1].startswith("OK:")

    bad = str(tmp_path / "bad.pth")
    state = _broken_state(model, num_missing=12, num_unexpected=1, wrong_shape=[CLASS_KEYS[0]])
    torch.save({"model": state}, bad)
    assert inspect_tool.main(["--config-file", config, bad, "MODEL.DEVICE", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "12 missing, 1 unexpected, 1 wrong-shape" in out
    assert all(k in out for k in _missable_keys(model)[:12])  # the tool lists every key
    assert f"{CLASS_KEYS[0]}: checkpoint (3, 5) vs model (9, 128)" in out
    assert "extra.layer0.weight" in out
    assert out.strip().splitlines()[-1].startswith("MISMATCH:")

    # a different number of classes: no exact fit, but a valid start for a training
    assert (
        inspect_tool.main(["--config-file", config, good, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"])
        == 1
    )
    out = capsys.readouterr().out
    assert "usable as MODEL.WEIGHTS to start a training" in out

    assert inspect_tool.main(["--config-file", config, str(tmp_path / "none.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_failed_load_does_not_block_the_next_one(synthetic_model, tmp_path):
    model = _fresh(synthetic_model)
    bad = str(tmp_path / "bad.pth")
    torch.save({"model": _broken_state(model, num_missing=1)}, bad)
    good = str(tmp_path / "good.pth")
    state = _random_state(model)
    torch.save({"model": state}, good)
    checkpointer = Mask2FormerCheckpointer(model)
    with pytest.raises(CheckpointMismatchError):
        checkpointer.load(bad)
    checkpointer.load(good)
    _assert_loaded(model, state)
