"""The YouTube-VIS and synthetic video registrations, and the data_video public names."""
import importlib
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import mask2former_video.data_video  # noqa: F401  (registers the video datasets)
from mask2former_video.data_video.datasets.builtin import register_all_ytvis_2019, register_all_ytvis_2021

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "reference", "video_public_names.txt")

# (name, year, split folder) of every YouTube-VIS registration; (contiguous id, name) samples
YTVIS = [
    ("ytvis_2019_train", 2019, "train"),
    ("ytvis_2019_val", 2019, "valid"),
    ("ytvis_2021_train", 2021, "train"),
    ("ytvis_2021_val", 2021, "valid"),
]
SAMPLE_CLASSES = {
    2019: {0: "person", 1: "giant_panda", 38: "earless_seal", 39: "tennis_racket"},
    2021: {0: "airplane", 13: "flying_disc", 25: "person", 39: "zebra"},
}


@pytest.mark.parametrize("name,year,split", YTVIS)
def test_ytvis_registered_with_40_classes(name, year, split):
    assert name in DatasetCatalog.list()
    meta = MetadataCatalog.get(name)
    assert len(meta.thing_classes) == len(meta.thing_colors) == 40
    assert len(set(meta.thing_classes)) == 40
    assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(40)}
    assert all(meta.thing_classes[i] == c for i, c in SAMPLE_CLASSES[year].items())
    assert meta.evaluator_type == "ytvis"
    assert meta.json_file.endswith(f"ytvis_{year}/{split}.json")
    assert meta.image_root.endswith(f"ytvis_{year}/{split}/JPEGImages")


def test_register_under_another_root_then_restore(tmp_path):
    old_root = os.path.dirname(os.path.dirname(MetadataCatalog.get("ytvis_2019_train").json_file))
    try:
        register_all_ytvis_2019(str(tmp_path))
        register_all_ytvis_2021(str(tmp_path))
        assert MetadataCatalog.get("ytvis_2021_val").json_file == os.path.join(str(tmp_path), "ytvis_2021/valid.json")
        with pytest.raises(FileNotFoundError):
            DatasetCatalog.get("ytvis_2019_val")
    finally:
        register_all_ytvis_2019(old_root)
        register_all_ytvis_2021(old_root)


def test_synthetic_video_registered():
    for split in ("train", "val"):
        meta = MetadataCatalog.get(f"synthetic_video_{split}")
        assert meta.thing_classes == ["disk", "box", "triangle", "star", "ring"]
        assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 4: 2, 7: 3, 9: 4}
        assert meta.evaluator_type == "ytvis"
        assert meta.json_file.endswith(os.path.join("synthetic_video", {"train": "train", "val": "valid"}[split] + ".json"))


def _data_video_names():
    with open(REFERENCE) as f:
        lines = [l.strip() for l in f if l.strip().startswith("mask2former_video.data_video")]
    return [l for l in lines if "ytvis_eval" not in l and not l.endswith(":YTVISEvaluator")]


@pytest.mark.parametrize("line", _data_video_names())
def test_public_name_imports(line):
    module, name = line.split(":")
    assert hasattr(importlib.import_module(module), name), line


def test_package_exports_the_loaders_for_the_top_level():
    # mask2former_video re-exports these (the original's train_net_video.py imports them from there)
    import mask2former_video.data_video as data_video
    from mask2former_video.data_video import build

    for name in ("build_detection_train_loader", "build_detection_test_loader", "get_detection_dataset_dicts"):
        assert getattr(data_video, name) is getattr(build, name)
