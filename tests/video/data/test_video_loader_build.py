"""Video data loaders with detectron2's signatures."""
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.projects.deeplab import add_deeplab_config

from mask2former import add_maskformer2_config
from mask2former_video import add_maskformer2_video_config
from mask2former_video.data_video.build import (
    build_detection_test_loader,
    build_detection_train_loader,
    filter_images_with_only_crowd_annotations,
    get_detection_dataset_dicts,
)
from mask2former_video.data_video.datasets.ytvis import register_ytvis_instances

NAME = "tiny_ytvis_loader_test"


@pytest.fixture
def cfg(tiny_ytvis):
    register_ytvis_instances(NAME, {}, *tiny_ytvis)
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_maskformer2_video_config(cfg)
    cfg.DATASETS.TRAIN = (NAME,)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST = (16,), 8
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    yield cfg
    DatasetCatalog.remove(NAME)


def test_dataset_dicts_filter_videos_without_objects(cfg):
    assert [d["video_id"] for d in get_detection_dataset_dicts(NAME, filter_empty=False)] == [1, 2]
    assert [d["video_id"] for d in get_detection_dataset_dicts([NAME])] == [1]
    crowd = {"video_id": 8, "annotations": [[{"id": 1, "iscrowd": 1}], []]}
    assert filter_images_with_only_crowd_annotations([crowd], [NAME]) == []


def test_dataset_dicts_bad_arguments(cfg):
    with pytest.raises(ValueError, match="proposals are not supported"):
        get_detection_dataset_dicts(NAME, proposal_files=["p.pkl"])
    with pytest.raises(ValueError, match="no dataset names"):
        get_detection_dataset_dicts([])
    DatasetCatalog.register("empty_video_set", lambda: [])
    try:
        with pytest.raises(ValueError, match="Dataset 'empty_video_set' is empty"):
            get_detection_dataset_dicts("empty_video_set")
    finally:
        DatasetCatalog.remove("empty_video_set")


def test_train_loader_from_config(cfg):
    batch = next(iter(build_detection_train_loader(cfg)))
    assert len(batch) == 2
    for clip in batch:
        assert clip["video_id"] == 1 and len(clip["image"]) == 2 and len(clip["instances"]) == 2
        assert clip["image"][0].shape == (3, 16, 20)


def test_train_loader_rejects_other_samplers(cfg):
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    with pytest.raises(ValueError, match="DATALOADER.SAMPLER_TRAIN = 'RepeatFactorTrainingSampler'"):
        build_detection_train_loader(cfg)


def test_test_loader_gives_every_video_whole(cfg):
    clips = [batch[0] for batch in build_detection_test_loader(cfg, NAME)]
    assert [c["video_id"] for c in clips] == [1, 2]
    assert [len(c["image"]) for c in clips] == [4, 2]
    assert clips[0]["image"][0].shape == (3, 8, 10) and "instances" not in clips[0]
