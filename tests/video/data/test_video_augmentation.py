"""Clip-consistent augmentations and build_augmentation's config keys."""
import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.projects.deeplab import add_deeplab_config

from mask2former import add_maskformer2_config
from mask2former_video import add_maskformer2_video_config
from mask2former_video.data_video.augmentation import RandomFlip, ResizeShortestEdge, build_augmentation


def _cfg():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_maskformer2_video_config(cfg)
    return cfg


def _draws(aug, n):
    image = np.zeros((20, 30, 3), np.uint8)
    return [aug.get_transform(image) for _ in range(n)]


def test_resize_drawn_once_per_clip():
    np.random.seed(0)
    aug = ResizeShortestEdge([10, 20, 30, 40, 50], sample_style="choice_by_clip", clip_frame_cnt=3)
    draws = _draws(aug, 30)
    for clip in range(10):
        assert len({(t.new_h, t.new_w) for t in draws[3 * clip : 3 * clip + 3]}) == 1
        assert draws[3 * clip] is draws[3 * clip + 2]
    assert len({(t.new_h, t.new_w) for t in draws}) > 1


def test_flip_drawn_once_per_clip():
    np.random.seed(0)
    draws = _draws(RandomFlip(prob=0.5, clip_frame_cnt=2), 40)
    kinds = [type(t).__name__ for t in draws]
    assert all(kinds[i] == kinds[i + 1] for i in range(0, 40, 2))
    assert set(kinds) == {"HFlipTransform", "NoOpTransform"}
    with pytest.raises(ValueError, match="clip_frame_cnt must be >= 1"):
        RandomFlip(clip_frame_cnt=0)


def test_build_augmentation_reads_the_config():
    cfg = _cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (360, 480)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice_by_clip"
    cfg.INPUT.RANDOM_FLIP = "flip_by_clip"
    cfg.INPUT.AUGMENTATIONS = ["brightness", "rotation"]
    cfg.INPUT.CROP.ENABLED = True
    augs = build_augmentation(cfg, is_train=True)
    assert [type(a) for a in augs] == [T.RandomCrop, ResizeShortestEdge, RandomFlip, T.RandomBrightness, T.RandomRotation]
    assert augs[1].sample_style == "choice" and augs[1].short_edge_length == (360, 480)
    assert (augs[2].horizontal, augs[2].vertical) == (True, False)
    repr(augs)  # detectron2's __repr__ reads the constructor arguments
    test = build_augmentation(cfg, is_train=False)
    assert len(test) == 1 and test[0].short_edge_length == (cfg.INPUT.MIN_SIZE_TEST,) * 2


@pytest.mark.parametrize(
    "key,value,message",
    [("AUGMENTATIONS", ["blur"], "INPUT.AUGMENTATIONS: unknown name 'blur'"),
     ("RANDOM_FLIP", "diagonal", "INPUT.RANDOM_FLIP = 'diagonal'")],
)
def test_bad_augmentation_keys(key, value, message):
    cfg = _cfg()
    cfg.INPUT[key] = value
    with pytest.raises(ValueError, match=message):
        build_augmentation(cfg, is_train=True)
