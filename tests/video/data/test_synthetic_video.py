"""The synthetic video dataset: deterministic, in YouTube-VIS format, readable through its names."""
import filecmp
import json
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former.data.synthetic import load_synthetic_categories
from mask2former_video.data_video.synthetic import (
    ensure_synthetic_video_dataset,
    generate_synthetic_video_dataset,
    register_all_synthetic_video,
)
from mask2former_video.data_video.synthetic.__main__ import main
from mask2former_video.data_video.synthetic.render import MIN_VISIBLE_PIXELS, render_video

SMALL = dict(num_train=3, num_val=2, num_frames=4, seed=5)


def _files(root):
    d = os.path.join(root, "synthetic_video")
    return sorted(os.path.relpath(os.path.join(p, f), d) for p, _, fs in os.walk(d) for f in fs if f != ".lock")


def test_deterministic_for_a_seed(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    generate_synthetic_video_dataset(a, **SMALL)
    generate_synthetic_video_dataset(b, **SMALL)
    files = _files(a)
    assert files == _files(b) and len([f for f in files if f.endswith(".jpg")]) == (3 + 2) * 4
    _, mismatch, errors = filecmp.cmpfiles(os.path.join(a, "synthetic_video"), os.path.join(b, "synthetic_video"), files, shallow=False)
    assert mismatch == [] and errors == []
    c = str(tmp_path / "c")
    generate_synthetic_video_dataset(c, **dict(SMALL, seed=6))
    assert not filecmp.cmp(os.path.join(a, "synthetic_video/train.json"), os.path.join(c, "synthetic_video/train.json"), shallow=False)


def test_objects_move_occlude_and_leave():
    cats = load_synthetic_categories()
    videos = [render_video(np.random.default_rng(i), cats, 8, 64, 64) for i in range(30)]
    tracks = [t for v in videos for t in v.tracks]
    assert all(1 <= len(v.tracks) <= 3 for v in videos if v.tracks)
    assert any(m is None for t in tracks for m in t.masks)  # absent from some frames
    present = [m for t in tracks for m in t.masks if m is not None]
    assert all(m.sum() >= MIN_VISIBLE_PIXELS for m in present)
    moved = [t for t in tracks if t.masks[0] is not None and t.masks[-1] is not None]
    assert any(not np.array_equal(t.masks[0], t.masks[-1]) for t in moved)
    for v in videos:  # visible masks of one frame never overlap: occluded parts belong to the front object
        for f in range(8):
            masks = [t.masks[f] for t in v.tracks if t.masks[f] is not None]
            assert not masks or np.sum(masks, axis=0).max() <= 1


def test_cli_and_registered_names(tmp_path):
    root = str(tmp_path)
    assert main(["--root", root, "--num-train", "3", "--num-val", "2", "--num-frames", "5", "--seed", "1"]) == 0
    with open(os.path.join(root, "synthetic_video", "valid.json")) as f:
        data = json.load(f)
    assert len(data["videos"]) == 2 and all(v["length"] == 5 for v in data["videos"])
    assert [c["id"] for c in data["categories"]] == [1, 2, 4, 7, 9]
    names = register_all_synthetic_video(root, prefix="synthetic_video_test")
    try:
        train = DatasetCatalog.get("synthetic_video_test_train")
        assert len(train) == 3 and all(len(v["annotations"]) == 5 for v in train)
        assert all(os.path.isfile(f) for v in train for f in v["file_names"])
        ids = {o["category_id"] for v in train for frame in v["annotations"] for o in frame}
        assert ids and ids <= set(range(5))
        assert MetadataCatalog.get("synthetic_video_test_val").evaluator_type == "ytvis"
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_ensure_generates_once_and_keeps_matching_data(tmp_path):
    root = str(tmp_path)
    d = ensure_synthetic_video_dataset(root, **SMALL)
    stamp = os.path.getmtime(os.path.join(d, "train.json"))
    assert ensure_synthetic_video_dataset(root) == d  # any data of this version will do
    assert ensure_synthetic_video_dataset(root, num_train=3) == d
    assert os.path.getmtime(os.path.join(d, "train.json")) == stamp
    ensure_synthetic_video_dataset(root, num_train=4, num_val=2, num_frames=4)
    with open(os.path.join(d, "train.json")) as f:
        assert len(json.load(f)["videos"]) == 4
