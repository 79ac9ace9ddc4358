"""YTVISDatasetMapper: frame sampling, one augmentation per clip, instances kept across frames."""
import copy

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.projects.deeplab import add_deeplab_config
from PIL import Image

from conftest import H, MASKS, W, frame_pixels
from mask2former import add_maskformer2_config
from mask2former_video import add_maskformer2_video_config
from mask2former_video.data_video import YTVISDatasetMapper
from mask2former_video.data_video.augmentation import RandomFlip, ResizeShortestEdge
from mask2former_video.data_video.datasets.ytvis import load_ytvis_json


def _mapper(is_train=True, augmentations=(), **kwargs):
    args = dict(image_format="RGB", sampling_frame_num=4, sampling_frame_range=3, num_classes=2)
    args.update(kwargs)
    return YTVISDatasetMapper(is_train, augmentations=list(augmentations), **args)


@pytest.fixture
def video(tiny_ytvis):
    return load_ytvis_json(*tiny_ytvis)[0]


def test_from_config():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_maskformer2_video_config(cfg)
    cfg.INPUT.SAMPLING_FRAME_NUM, cfg.INPUT.SAMPLING_FRAME_RANGE = 3, 7
    mapper = YTVISDatasetMapper(cfg, is_train=True)
    assert (mapper.sampling_frame_num, mapper.sampling_frame_range, mapper.sampling_frame_shuffle) == (3, 7, False)
    assert isinstance(mapper.augmentations[0], ResizeShortestEdge)
    assert not YTVISDatasetMapper(cfg, is_train=False).is_train


def test_same_flip_and_size_for_every_frame(video):
    augs = [ResizeShortestEdge([8, 16, 32], max_size=100, sample_style="choice"), RandomFlip(prob=0.5)]
    mapper = _mapper(augmentations=augs, sampling_frame_num=3)
    np.random.seed(0)
    seen = set()
    for _ in range(16):
        out = mapper(copy.deepcopy(video))
        sizes = {tuple(im.shape) for im in out["image"]}
        assert len(sizes) == 1
        (c, h, w), = sizes
        flips = []
        for t, image in zip(out["frame_idx"], out["image"]):
            source = np.asarray(Image.fromarray(frame_pixels(t)).resize((w, h), Image.BILINEAR)).astype(int)
            image = image.permute(1, 2, 0).numpy().astype(int)
            # red grows with the column: flipped frames have it decreasing
            flips.append(bool(image[:, 0, 0].mean() > image[:, -1, 0].mean()))
            assert abs(image[..., 2].mean() - 40 * t) < 1  # the frame's own content
        assert len(set(flips)) == 1, flips
        seen.add((h, flips[0]))
        for inst in out["instances"]:
            assert inst.image_size == (h, w) and inst.gt_masks.tensor.shape[1:] == (h, w)
    assert {f for _, f in seen} == {True, False} and len({s for s, _ in seen}) > 1


def test_instances_kept_across_frames(video):
    np.random.seed(1)
    mapper = _mapper(sampling_frame_num=8, sampling_frame_range=3)
    for _ in range(5):
        out = mapper(copy.deepcopy(video))
        assert out["image"][0].dtype == torch.uint8 and out["image"][0].shape == (3, H, W)
        # both objects are in some frame of any 8-frame draw of this 4-frame video; the class
        # of each slot (1 -> object 11, 0 -> object 12) is the same in every frame
        classes = {tuple(inst.gt_classes.tolist()) for inst in out["instances"]}
        assert len(classes) == 1 and sorted(next(iter(classes))) == [0, 1]
        for t, inst in zip(out["frame_idx"], out["instances"]):
            for k, cls in enumerate(inst.gt_classes.tolist()):
                obj = {1: 11, 0: 12}[cls]
                mask = inst.gt_masks.tensor[k].numpy()
                if MASKS[obj][t] is None:
                    assert inst.gt_ids[k] == -1 and not mask.any()
                    assert inst.gt_boxes.tensor[k].abs().sum() == 0
                else:
                    assert inst.gt_ids[k] == obj
                    np.testing.assert_array_equal(mask, MASKS[obj][t])


def test_sampling_within_range_sorted_or_shuffled():
    np.random.seed(2)
    mapper = _mapper(sampling_frame_num=5, sampling_frame_range=4)
    for _ in range(200):
        idx = mapper.sample_frames(40)
        assert len(idx) == 5 and idx == sorted(idx)
        assert 0 <= idx[0] and idx[-1] < 40 and idx[-1] - idx[0] <= 8
    shuffled = _mapper(sampling_frame_num=5, sampling_frame_range=4, sampling_frame_shuffle=True)
    assert any(shuffled.sample_frames(40) != sorted(shuffled.sample_frames(40)) for _ in range(50))
    draws = {i for _ in range(300) for i in mapper.sample_frames(40)}
    assert draws == set(range(40))


def test_short_video_repeats_frames(tmp_path):
    Image.fromarray(frame_pixels(0)).save(tmp_path / "a.png")
    single = {"file_names": [str(tmp_path / "a.png")], "height": H, "width": W, "length": 1, "video_id": 9,
              "annotations": [[]]}
    out = _mapper(sampling_frame_num=3)(single)
    assert out["frame_idx"] == [0, 0, 0] and len(out["image"]) == 3 and len(out["instances"]) == 3
    assert all(len(inst) == 0 for inst in out["instances"])


def test_test_mode_all_frames_no_instances(video):
    out = _mapper(is_train=False, augmentations=[ResizeShortestEdge(8, sample_style="choice")])(video)
    assert out["frame_idx"] == [0, 1, 2, 3] and len(out["file_names"]) == 4
    assert [tuple(im.shape) for im in out["image"]] == [(3, 8, 10)] * 4
    assert "instances" not in out and "annotations" not in out
    assert (out["height"], out["width"], out["length"], out["video_id"]) == (H, W, 4, 1)


def test_frame_of_another_size(video, tmp_path):
    bad = str(tmp_path / "big.png")
    Image.fromarray(frame_pixels(0, H + 2, W)).save(bad)
    video["file_names"][2] = bad
    with pytest.raises(ValueError, match=r"Video 1: frame 2 \(.*big\.png\) is 20x18, but the video is 20x16"):
        _mapper(is_train=False)(video)


def test_missing_frame_file(video):
    video["file_names"][1] += ".missing"
    with pytest.raises(FileNotFoundError, match=r"01\.png\.missing"):
        _mapper(is_train=False)(video)


def test_empty_video_at_test_time():
    with pytest.raises(ValueError, match="Video 5: length 0 with 0 frames"):
        _mapper(is_train=False)({"file_names": [], "height": H, "width": W, "length": 0, "video_id": 5})


def test_category_outside_num_classes(video):
    with pytest.raises(ValueError, match=r"video 1: category_id 1 is not in \[0, 1\)"):
        _mapper(num_classes=1, sampling_frame_num=8)(video)


def test_frame_without_any_present_object_still_has_empty_masks():
    """A frame in which none of the clip's objects is present (all absent) gets gt_masks, empty,
    so that the model can stack every frame's masks into tubes."""
    from mask2former_video.data_video.dataset_mapper import ytvis_annotations_to_instances

    absent = [{"id": 3, "category_id": 1}, {"id": 5, "category_id": 0}]
    frame = ytvis_annotations_to_instances(absent, (6, 8), with_masks=True)
    assert frame.gt_masks.tensor.shape == (2, 6, 8) and not frame.gt_masks.tensor.any()
    assert frame.gt_ids.tolist() == [-1, -1] and frame.gt_classes.tolist() == [1, 0]
    assert ytvis_annotations_to_instances([], (6, 8), with_masks=True).gt_masks.tensor.shape == (0, 6, 8)
    assert not ytvis_annotations_to_instances(absent, (6, 8), with_masks=False).has("gt_masks")
