"""load_ytvis_json on a hand-written file: RLE (compressed, uncompressed), polygons and nulls."""
import json
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode

from conftest import H, MASKS, W, tiny_ytvis_json, write_json
from mask2former_video.data_video.datasets.ytvis import load_ytvis_json


def _decode(segm):
    if isinstance(segm, dict):
        return mask_util.decode(segm)
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, H, W)))


def test_loads_videos_frames_and_objects(tiny_ytvis):
    json_file, image_root = tiny_ytvis
    dicts = load_ytvis_json(json_file, image_root)
    assert [d["video_id"] for d in dicts] == [1, 2]  # video 3 has no frames: skipped
    video = dicts[0]
    assert (video["height"], video["width"], video["length"]) == (H, W, 4)
    assert video["file_names"] == [os.path.join(image_root, f"v1/{t:02d}.png") for t in range(4)]
    assert [sorted(o["id"] for o in frame) for frame in video["annotations"]] == [[11], [11, 12], [11, 12], [12]]
    for t, frame in enumerate(video["annotations"]):
        for obj in frame:
            assert obj["category_id"] == {11: 1, 12: 0}[obj["id"]]  # ids 3, 7 -> 0, 1
            assert obj["bbox_mode"] == BoxMode.XYWH_ABS and obj["iscrowd"] == 0
            np.testing.assert_array_equal(_decode(obj["segmentation"]), MASKS[obj["id"]][t])
    obj_11 = {t: o for t, f in enumerate(video["annotations"]) for o in f if o["id"] == 11}
    assert obj_11[0]["bbox"] == [2.0, 2.0, 6.0, 4.0]
    assert obj_11[1]["bbox"] == [3.0, 2.0, 6.0, 4.0]  # null in "bboxes": the mask's box
    assert isinstance(obj_11[1]["segmentation"]["counts"], bytes)  # uncompressed -> compressed RLE
    assert isinstance(obj_11[2]["segmentation"], list)  # polygons stay polygons
    assert dicts[1]["annotations"] == [[], []]


def test_metadata_and_extra_keys(tiny_ytvis):
    json_file, image_root = tiny_ytvis
    dicts = load_ytvis_json(json_file, image_root, "tiny_ytvis_meta_test", extra_annotation_keys=["note"])
    meta = MetadataCatalog.get("tiny_ytvis_meta_test")
    assert meta.thing_classes == ["a", "b"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    notes = [o.get("note") for f in dicts[0]["annotations"] for o in f]
    assert notes == ["x", "x", None, "x", None, None]


def test_segmentations_of_wrong_length(tmp_path):
    data = tiny_ytvis_json(str(tmp_path / "img"))
    data["annotations"][1]["segmentations"].pop()
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(ValueError, match=r"bad\.json: annotation 12 of video 1 has 3 segmentations for 4 frames"):
        load_ytvis_json(path, str(tmp_path))


@pytest.mark.parametrize("where,key", [("videos", "file_names"), ("annotations", "category_id")])
def test_missing_key(tmp_path, where, key):
    data = tiny_ytvis_json(str(tmp_path / "img"))
    del data[where][0][key]
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(KeyError, match=rf"bad\.json: .* lacks key\(s\) \['{key}'\]"):
        load_ytvis_json(path, str(tmp_path))


def test_unknown_category_and_video(tmp_path):
    data = tiny_ytvis_json(str(tmp_path / "img"))
    data["annotations"][0]["category_id"] = 99
    with pytest.raises(ValueError, match="annotation 11 of video 1 has unknown category_id 99"):
        load_ytvis_json(write_json(tmp_path / "a.json", data), str(tmp_path))
    data = tiny_ytvis_json(str(tmp_path / "img"))
    data["annotations"][0]["video_id"] = 42
    with pytest.raises(ValueError, match="annotation 11 names unknown video 42"):
        load_ytvis_json(write_json(tmp_path / "b.json", data), str(tmp_path))


def test_empty_video_skipped_in_training_error_at_test(tmp_path, caplog):
    data = tiny_ytvis_json(str(tmp_path / "img"))
    with caplog.at_level(logging.WARNING):
        dicts = load_ytvis_json(write_json(tmp_path / "train.json", data), str(tmp_path))
    assert 3 not in [d["video_id"] for d in dicts]
    assert "skipping video 3, which has no frames" in caplog.text
    del data["annotations"]  # a test split
    path = write_json(tmp_path / "valid.json", data)
    with pytest.raises(ValueError, match=r"valid\.json: video 3 has no frames"):
        load_ytvis_json(path, str(tmp_path))
    data["videos"].pop()
    dicts = load_ytvis_json(write_json(tmp_path / "valid2.json", data), str(tmp_path))
    assert all("annotations" not in d for d in dicts) and len(dicts) == 2


def test_length_disagrees_with_file_names(tmp_path):
    data = tiny_ytvis_json(str(tmp_path / "img"))
    data["videos"][1]["length"] = 5
    with pytest.raises(ValueError, match="video 2 has length 5 but 2 file_names"):
        load_ytvis_json(write_json(tmp_path / "c.json", data), str(tmp_path))


@pytest.mark.parametrize(
    "segm,message",
    [
        ({"size": [H + 1, W], "counts": [5]}, r"annotation 11 of video 1, frame 0: RLE .* 'size' = \[16, 20\]"),
        ("abc", r"annotation 11 of video 1, frame 0: a segmentation must be RLE, a list of polygons or null"),
        ([1, 2, 3, 4, 5, 6], r"frame 0: a segmentation must be RLE"),
    ],
)
def test_bad_segmentation(tmp_path, segm, message):
    data = tiny_ytvis_json(str(tmp_path / "img"))
    data["annotations"][0]["segmentations"][0] = segm
    with pytest.raises(ValueError, match=message):
        load_ytvis_json(write_json(tmp_path / "d.json", data), str(tmp_path))


def test_duplicate_annotation_id(tmp_path):
    data = tiny_ytvis_json(str(tmp_path / "img"))
    data["annotations"][1]["id"] = 11
    with pytest.raises(ValueError, match=r"e\.json: annotation id 11 is used twice"):
        load_ytvis_json(write_json(tmp_path / "e.json", data), str(tmp_path))
