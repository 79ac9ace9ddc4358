"""Training dataset mappers on real-format samples (the synthetic dataset's files)."""

import copy
import logging

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.structures import BoxMode
from panopticapi.utils import rgb2id
from PIL import Image

from mask2former.config import add_maskformer2_config
from mask2former.data.build import MAPPERS, build_train_mapper
from mask2former.data.dataset_mappers import (
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    ColorAugSSDTransform,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    SSDColorJitter,
)
from mask2former.data.dataset_mappers.common import DroppedInstancesReporter
from mask2former.data.synthetic import ensure_synthetic_dataset, register_all_synthetic

PREFIX = "tmapper"
FLIP = [T.RandomFlip(prob=1.0)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    ensure_synthetic_dataset(root, num_train=4, num_val=1, seed=0)
    register_all_synthetic(root, prefix=PREFIX)
    return {
        kind: DatasetCatalog.get(f"{PREFIX}_{kind}_train")
        for kind in ("panoptic", "instance", "sem_seg")
    }


def _cfg(dataset: str, mapper: str, **input_overrides):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.DATASETS.TRAIN = (f"{PREFIX}_{dataset}_train",)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    # the synthetic metadata: 5 thing classes, 8 classes in all
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5 if "instance" in mapper else 8
    cfg.INPUT.MIN_SIZE_TRAIN = (100, 128, 150)
    cfg.INPUT.MAX_SIZE_TRAIN = 300
    cfg.INPUT.IMAGE_SIZE = 128
    for k, v in input_overrides.items():
        setattr(cfg.INPUT, k, v)
    return cfg


def _read(path):
    return np.asarray(Image.open(path))


def _masks(instances):
    return instances.gt_masks.numpy()


def _check_common(out, d):
    image, inst = out["image"], out["instances"]
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    assert (out["height"], out["width"]) == (128, 128) and out["file_name"] == d["file_name"]
    assert inst.gt_masks.dtype == torch.bool and inst.gt_classes.dtype == torch.int64
    assert inst.gt_masks.shape == (len(inst), *image.shape[1:])
    assert tuple(inst.image_size) == tuple(image.shape[1:])
    assert all(m.any() for m in _masks(inst)), "no empty mask"
    if "sem_seg" in out:
        assert out["sem_seg"].dtype == torch.int64 and out["sem_seg"].shape == image.shape[1:]


def test_semantic_flip_is_exact(data):
    d = data["sem_seg"][0]
    mapper = MaskFormerSemanticDatasetMapper(augmentations=FLIP, image_format="RGB", num_classes=8)
    out = mapper(d)
    _check_common(out, d)
    sem = _read(d["sem_seg_file_name"])[:, ::-1]
    np.testing.assert_array_equal(out["sem_seg"].numpy(), sem)
    np.testing.assert_array_equal(
        out["image"].permute(1, 2, 0).numpy(), _read(d["file_name"])[:, ::-1]
    )
    classes = [c for c in np.unique(sem) if c != 255]
    assert out["instances"].gt_classes.tolist() == classes
    for c, m in zip(classes, _masks(out["instances"])):
        np.testing.assert_array_equal(m, sem == c)


@pytest.mark.parametrize("dataset", ["sem_seg", "panoptic"])
def test_semantic_with_full_augmentation(data, dataset):
    cfg = _cfg(dataset, "mask_former_semantic", COLOR_AUG_SSD=True, SIZE_DIVISIBILITY=32)
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (90, 90)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.8
    mapper = build_train_mapper(cfg)
    np.random.seed(0)
    for d in data[dataset]:
        out = mapper(d)
        _check_common(out, d)
        sem = out["sem_seg"].numpy()
        assert out["image"].shape[1:] == (96, 96), "90x90 crop padded to a multiple of 32"
        assert (sem[90:] == 255).all() and (sem[:, 90:] == 255).all()
        assert (out["image"][:, 90:] == 0).all() and (out["image"][:, :, 90:] == 0).all()
        union = _masks(out["instances"]).sum(axis=0)
        assert union.max() == 1, "semantic instances are disjoint"
        np.testing.assert_array_equal(union.astype(bool), sem != 255)


def test_padding_carries_ignore_label(data):
    d = data["sem_seg"][1]
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[T.Resize((100, 90))], image_format="BGR", size_divisibility=32
    )
    out = mapper(d)
    sem = out["sem_seg"].numpy()
    assert sem.shape == (128, 96)
    assert (sem[100:] == 255).all() and (sem[:, 90:] == 255).all() and (sem[:100, :90] != 255).all()
    assert not _masks(out["instances"])[:, 100:].any()
    bgr = out["image"].permute(1, 2, 0).numpy()[:100, :90]
    rgb = np.asarray(Image.open(d["file_name"]).resize((90, 100), Image.BILINEAR))
    assert np.abs(bgr[:, :, ::-1].astype(int) - rgb).mean() < 1.0, "image in BGR"


def test_panoptic_flip_and_targets(data):
    d = data["panoptic"][0]
    mapper = MaskFormerPanopticDatasetMapper(augmentations=FLIP, image_format="RGB", num_classes=8)
    out = mapper(d)
    _check_common(out, d)
    pan = rgb2id(_read(d["pan_seg_file_name"]))[:, ::-1]
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [s["category_id"] for s in d["segments_info"]]
    for s, m in zip(d["segments_info"], _masks(inst)):
        np.testing.assert_array_equal(m, pan == s["id"])
    np.testing.assert_array_equal(out["sem_seg"].numpy(), _read(d["sem_seg_file_name"])[:, ::-1])
    assert not inst.has("gt_boxes")


def test_panoptic_crowd_segments_are_ignored(data):
    d = copy.deepcopy(data["panoptic"][0])
    crowd = next(s for s in d["segments_info"] if s["isthing"])
    crowd["iscrowd"] = 1
    mapper = MaskFormerPanopticDatasetMapper(augmentations=[], image_format="RGB")
    out = mapper(d)
    pan = rgb2id(_read(d["pan_seg_file_name"]))
    assert len(out["instances"]) == len(d["segments_info"]) - 1
    assert (out["sem_seg"].numpy()[pan == crowd["id"]] == 255).all()
    assert not _masks(out["instances"])[:, pan == crowd["id"]].any()


def test_panoptic_bad_input_is_named(data, tmp_path):
    mapper = MaskFormerPanopticDatasetMapper(augmentations=[], image_format="RGB", num_classes=8)
    d = copy.deepcopy(data["panoptic"][0])
    d["segments_info"].append({"id": 4242, "category_id": 0, "iscrowd": 0, "isthing": True})
    with pytest.raises(ValueError, match=r"000001\.png.*segment id 4242"):
        mapper(d)
    d = copy.deepcopy(data["panoptic"][0])
    d["segments_info"][0]["category_id"] = 99
    with pytest.raises(ValueError, match="category id 99"):
        mapper(d)
    d = dict(data["panoptic"][0], file_name=str(tmp_path / "nope.jpg"))
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        mapper(d)
    d = dict(data["panoptic"][0], pan_seg_file_name=str(tmp_path / "nope.png"))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        mapper(d)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    d = dict(data["panoptic"][0], pan_seg_file_name=str(tmp_path / "broken.png"))
    with pytest.raises(OSError, match="broken.png"):
        mapper(d)


def test_semantic_unknown_label_is_named(data, tmp_path):
    d = data["sem_seg"][0]
    sem = _read(d["sem_seg_file_name"]).copy()
    sem[0, 0] = 17
    Image.fromarray(sem).save(tmp_path / "bad.png")
    mapper = MaskFormerSemanticDatasetMapper(augmentations=[], image_format="RGB", num_classes=8)
    with pytest.raises(ValueError, match=r"bad\.png: labels \[17\]"):
        mapper(dict(d, sem_seg_file_name=str(tmp_path / "bad.png")))


def test_instance_flip_matches_rle(data):
    from pycocotools import mask as mask_util

    d = data["instance"][0]
    mapper = MaskFormerInstanceDatasetMapper(augmentations=FLIP, image_format="RGB", num_classes=5)
    out = mapper(d)
    _check_common(out, d)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [a["category_id"] for a in d["annotations"]]
    for a, m in zip(d["annotations"], _masks(inst)):
        np.testing.assert_array_equal(m, mask_util.decode(a["segmentation"])[:, ::-1].astype(bool))
    with pytest.raises(ValueError, match="category id 7"):
        bad = copy.deepcopy(d)
        bad["annotations"][0]["category_id"] = 7
        mapper(bad)


def test_instance_polygons_crowd_and_padding(data):
    d = copy.deepcopy(data["instance"][0])
    square = {
        "bbox": [10, 20, 30, 40],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 3,
        "segmentation": [[10, 20, 40, 20, 40, 60, 10, 60]],
        "iscrowd": 0,
    }
    crowd = dict(square, iscrowd=1, category_id=1)
    d["annotations"] = [square, crowd]
    mapper = MaskFormerInstanceDatasetMapper(
        augmentations=[T.Resize((64, 64))],
        image_format="RGB",
        size_divisibility=48,
        with_boxes=True,
    )
    out = mapper(d)
    inst = out["instances"]
    assert out["image"].shape == (3, 96, 96) and inst.gt_masks.shape == (1, 96, 96)
    assert inst.gt_classes.tolist() == [3]
    ys, xs = np.nonzero(_masks(inst)[0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 19, 10, 29)
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), [[5, 10, 20, 30]])


def test_convert_coco_poly_to_mask_polygons_and_rle(data):
    from pycocotools import mask as mask_util

    from mask2former.data.dataset_mappers.coco_instance_new_baseline_dataset_mapper import (
        convert_coco_poly_to_mask,
    )

    rle = data["instance"][0]["annotations"][0]["segmentation"]
    square = [[10, 20, 40, 20, 40, 60, 10, 60]]
    masks = convert_coco_poly_to_mask([square, rle], 128, 128)
    assert masks.dtype == torch.uint8 and masks.shape == (2, 128, 128)
    ys, xs = np.nonzero(masks[0].numpy())
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 39, 20, 59)
    np.testing.assert_array_equal(masks[1].numpy(), mask_util.decode(rle))
    assert convert_coco_poly_to_mask([], 7, 9).shape == (0, 7, 9)


def test_build_transform_gen_is_the_lsj_augmentation_list():
    from mask2former.data.dataset_mappers import (
        coco_instance_new_baseline_dataset_mapper as instance_lsj,
        coco_panoptic_new_baseline_dataset_mapper as panoptic_lsj,
    )

    cfg = _cfg("panoptic", "coco_panoptic_lsj", IMAGE_SIZE=96, MIN_SCALE=0.25, MAX_SCALE=2.0)
    for module in (instance_lsj, panoptic_lsj):
        augs = module.build_transform_gen(cfg, is_train=True)
        assert [type(a).__name__ for a in augs] == ["RandomFlip", "NonEmptyResize", "FixedSizeCrop"]
        resize = augs[1].resize
        assert (resize.min_scale, resize.max_scale, resize.target_height) == (0.25, 2.0, 96)
        assert augs[2].crop_size == (96, 96)
        with pytest.raises(ValueError, match="training"):
            module.build_transform_gen(cfg, is_train=False)


@pytest.mark.parametrize("size,scale", [(96, (0.3, 0.6)), (160, (1.2, 2.0)), (128, (0.5, 1.5))])
def test_lsj_output_is_exactly_image_size(data, size, scale):
    np.random.seed(1)
    for dataset, mapper_name in (
        ("instance", "coco_instance_lsj"),
        ("panoptic", "coco_panoptic_lsj"),
    ):
        cfg = _cfg(dataset, mapper_name, IMAGE_SIZE=size, MIN_SCALE=scale[0], MAX_SCALE=scale[1])
        mapper = build_train_mapper(cfg)
        for d in data[dataset]:
            for _ in range(2):
                out = mapper(d)
                _check_common(out, d)
                inst = out["instances"]
                assert out["image"].shape == (3, size, size)
                boxes = inst.gt_boxes.tensor.numpy()
                for m, (x0, y0, x1, y1) in zip(_masks(inst), boxes):
                    ys, xs = np.nonzero(m)
                    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
                if dataset == "panoptic":
                    sem = out["sem_seg"].numpy()
                    np.testing.assert_array_equal(_masks(inst).any(axis=0), sem != 255)
                    for c, m in zip(inst.gt_classes.tolist(), _masks(inst)):
                        assert (sem[m] == c).all()


def test_lsj_pads_small_images(data):
    cfg = _cfg("panoptic", "coco_panoptic_lsj", IMAGE_SIZE=128, MIN_SCALE=0.5, MAX_SCALE=0.5)
    out = build_train_mapper(cfg)(data["panoptic"][0])
    sem, image = out["sem_seg"].numpy(), out["image"]
    assert (sem[64:] == 255).all() and (sem[:, 64:] == 255).all() and (sem[:64, :64] != 255).all()
    assert (image[:, 64:] == 128).all() and not _masks(out["instances"])[:, 64:].any()


def test_crop_removing_every_instance_is_reported(data, caplog):
    d = copy.deepcopy(data["instance"][0])
    square = {
        "bbox": [0, 0, 10, 10],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
        "iscrowd": 0,
    }
    d["annotations"] = [square]
    # a fixed crop far from the only instance
    mapper = MaskFormerInstanceDatasetMapper(
        augmentations=[T.CropTransform(60, 60, 40, 40)], image_format="RGB"
    )
    with caplog.at_level(logging.WARNING):
        outs = [mapper(d) for _ in range(4)]
    assert all(len(o["instances"]) == 0 for o in outs)
    assert outs[0]["instances"].gt_masks.shape == (0, 40, 40)
    reports = [r for r in caplog.records if "removed all 1 instances" in r.getMessage()]
    assert len(reports) == 3, "rate limited: reported the 1st, 2nd and 4th time"
    assert d["file_name"] in reports[0].getMessage()
    assert mapper.dropped_instances.count == 4


def test_reporter_is_quiet_when_instances_remain(caplog):
    reporter = DroppedInstancesReporter("m")
    with caplog.at_level(logging.WARNING):
        reporter.update(3, 1, "a.jpg")
        reporter.update(0, 0, "b.jpg")  # nothing to lose
    assert reporter.count == 0 and not caplog.records


def test_build_train_mapper_by_name(data):
    datasets = {
        "mask_former_semantic": "sem_seg",
        "mask_former_panoptic": "panoptic",
        "mask_former_instance": "instance",
        "coco_instance_lsj": "instance",
        "coco_panoptic_lsj": "panoptic",
    }
    assert set(MAPPERS) == set(datasets)
    for name, dataset in datasets.items():
        mapper = build_train_mapper(_cfg(dataset, name))
        assert isinstance(mapper, MAPPERS[name])
        _check_common(mapper(data[dataset][0]), data[dataset][0])
    assert isinstance(
        build_train_mapper(_cfg("panoptic", "coco_panoptic_lsj")),
        COCOPanopticNewBaselineDatasetMapper,
    )
    assert isinstance(
        build_train_mapper(_cfg("instance", "coco_instance_lsj")),
        COCOInstanceNewBaselineDatasetMapper,
    )
    with pytest.raises(ValueError, match=r"'nope'.*coco_instance_lsj.*mask_former_semantic"):
        build_train_mapper(_cfg("sem_seg", "nope"))
    with pytest.raises(ValueError, match="training mapper"):
        MaskFormerSemanticDatasetMapper(_cfg("sem_seg", "mask_former_semantic"), is_train=False)


def test_ignore_label_and_classes_from_metadata(data):
    MetadataCatalog.get("tmapper_custom_ignore").set(ignore_label=7, stuff_classes=["a"] * 7)
    cfg = _cfg("sem_seg", "mask_former_semantic")
    cfg.DATASETS.TRAIN = ("tmapper_custom_ignore",)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 7
    mapper = build_train_mapper(cfg)
    assert mapper.ignore_label == 7 and mapper.num_classes == 7
    out = mapper(data["sem_seg"][0])
    assert 7 not in out["instances"].gt_classes.tolist()
    MetadataCatalog.get("tmapper_no_meta")
    cfg.DATASETS.TRAIN = ("tmapper_no_meta",)
    assert build_train_mapper(cfg).ignore_label == 255


def test_color_aug_ssd():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgb[0, 0] = (128, 128, 128)
    np.testing.assert_array_equal(SSDColorJitter("RGB").apply_image(rgb), rgb)
    brighter = SSDColorJitter("RGB", brightness_delta=10).apply_image(rgb)
    np.testing.assert_array_equal(brighter, np.clip(rgb.astype(int) + 10, 0, 255))
    jitter = dict(brightness_delta=-5, contrast_alpha=1.2, saturation_alpha=0.7, hue_delta=20)
    out_rgb = SSDColorJitter("RGB", **jitter).apply_image(rgb)
    out_bgr = SSDColorJitter("BGR", **jitter).apply_image(np.ascontiguousarray(rgb[:, :, ::-1]))
    np.testing.assert_array_equal(out_rgb, out_bgr[:, :, ::-1])
    assert out_rgb[0, 0, 0] == out_rgb[0, 0, 1] == out_rgb[0, 0, 2], "gray stays gray"
    np.random.seed(0)
    aug = ColorAugSSDTransform(img_format="RGB")
    sem = rng.integers(0, 5, (16, 16)).astype(np.uint8)
    aug_input = T.AugInput(rgb.copy(), sem_seg=sem.copy())
    changed = 0
    for _ in range(8):
        aug_input = T.AugInput(rgb.copy(), sem_seg=sem.copy())
        aug(aug_input)
        np.testing.assert_array_equal(aug_input.sem_seg, sem)
        assert aug_input.image.dtype == np.uint8 and aug_input.image.shape == rgb.shape
        changed += int(not np.array_equal(aug_input.image, rgb))
    assert changed >= 5
