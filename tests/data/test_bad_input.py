"""
Bad input in the training data path: unreadable, unusual or inconsistent files and annotations
reach every training mapper (and the model) either handled or as an error naming the file;
DATALOADER.SKIP_BAD_SAMPLES skips them; config/metadata mismatches fail at mapper build time.

Real dataset files come from the synthetic generator and are corrupted in tmp dirs.
"""

import copy
import gc
import glob
import itertools
import logging
import os
import re

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.structures import BoxMode
from panopticapi.utils import rgb2id
from PIL import Image

from mask2former.config import add_maskformer2_config
from mask2former.data.build import MAPPERS, SkipBadSamples, build_train_mapper
from mask2former.data.datasets import dataset_num_classes
from mask2former.data.synthetic import ensure_synthetic_dataset, register_all_synthetic
from mask2former.utils.config_merge import ConfigError, merge_config_opts
from model_utils import REPO, load_cfg

PREFIX = "tbadinput"
# mapper name -> the synthetic dataset it reads
MAPPER_DATASET = {
    "mask_former_semantic": "sem_seg",
    "mask_former_panoptic": "panoptic",
    "mask_former_instance": "instance",
    "coco_instance_lsj": "instance",
    "coco_panoptic_lsj": "panoptic",
}
ALL_MAPPERS = sorted(MAPPER_DATASET)
PANOPTIC_MAPPERS = ["mask_former_panoptic", "coco_panoptic_lsj"]
INSTANCE_MAPPERS = ["mask_former_instance", "coco_instance_lsj"]
LABEL_KEY = {"sem_seg": "sem_seg_file_name", "panoptic": "pan_seg_file_name"}
BUILD_LOGGER = "mask2former.data.build"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    ensure_synthetic_dataset(root, num_train=3, num_val=1, seed=0)
    register_all_synthetic(root, prefix=PREFIX)
    return {
        kind: DatasetCatalog.get(f"{PREFIX}_{kind}_train")
        for kind in LABEL_KEY.keys() | {"instance"}
    }


@pytest.fixture
def warnings_of():
    """Collects the warnings of a logger directly: detectron2's setup_logger (run by other
    tests) stops "mask2former.*" records from reaching pytest's root handler."""
    handlers = []

    def attach(name):
        records = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append
        logging.getLogger(name).addHandler(handler)
        handlers.append((name, handler))
        return records

    yield attach
    for name, handler in handlers:
        logging.getLogger(name).removeHandler(handler)


def _cfg(mapper_name, dataset=None, **input_overrides):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    dataset = dataset or f"{PREFIX}_{MAPPER_DATASET[mapper_name]}_train"
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper_name
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5 if mapper_name in INSTANCE_MAPPERS else 8
    cfg.INPUT.MIN_SIZE_TRAIN = (128,)
    cfg.INPUT.MAX_SIZE_TRAIN = 256
    cfg.INPUT.IMAGE_SIZE = 128
    for k, v in input_overrides.items():
        setattr(cfg.INPUT, k, v)
    return cfg


def _flat(opts):
    """{KEY: VALUE} -> [KEY, VALUE, ...], as detectron2's merge_from_list takes them."""
    return [x for kv in opts.items() for x in kv]


def _sample(data, mapper_name, index=0):
    return copy.deepcopy(data[MAPPER_DATASET[mapper_name]][index])


def _plain_mapper(mapper_name, image_format="RGB"):
    """The mapper class of `mapper_name` without augmentation: outputs keep the file's pixels."""
    return MAPPERS[mapper_name](augmentations=[], image_format=image_format)


def _hwc(out):
    return out["image"].permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- unreadable image files
def _truncated(src, dst):
    with open(src, "rb") as f:
        blob = f.read()
    with open(dst, "wb") as f:
        f.write(blob[: len(blob) // 2])


@pytest.mark.parametrize("mapper_name", ALL_MAPPERS)
@pytest.mark.parametrize("damage", ["missing", "truncated_jpeg", "truncated_png", "random_bytes"])
def test_unreadable_image_is_named(data, tmp_path, mapper_name, damage):
    d = _sample(data, mapper_name)
    path = tmp_path / f"{damage}.{'png' if damage == 'truncated_png' else 'jpg'}"
    if damage == "truncated_jpeg":
        _truncated(d["file_name"], path)
    elif damage == "truncated_png":
        Image.open(d["file_name"]).save(tmp_path / "full.png")
        _truncated(tmp_path / "full.png", path)
    elif damage == "random_bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    d["file_name"] = str(path)
    error = FileNotFoundError if damage == "missing" else OSError
    with pytest.raises(error) as e:
        build_train_mapper(_cfg(mapper_name))(d)
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    assert message.startswith(
        "Image file not found" if damage == "missing" else "Cannot read image file"
    )


# ---------------------------------------------------------------- image modes
def _rgb(d):
    return np.asarray(Image.open(d["file_name"]).convert("RGB"))


def _as_mode(rgb, mode):
    """(PIL image in `mode` made from an RGB array, the RGB array the mapper should give)."""
    rng = np.random.default_rng(0)
    if mode == "L":
        gray = Image.fromarray(rgb).convert("L")
        g = np.asarray(gray)
        return gray, np.stack([g] * 3, axis=-1)
    if mode == "LA":
        g = np.asarray(Image.fromarray(rgb).convert("L"))
        alpha = rng.integers(0, 256, g.shape, dtype=np.uint8)
        return Image.fromarray(np.stack([g, alpha], axis=-1), "LA"), np.stack([g] * 3, axis=-1)
    if mode == "RGBA":
        alpha = rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)
        return Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), rgb  # alpha dropped
    if mode == "P":
        pal = Image.fromarray(rgb).quantize(64)
        return pal, np.asarray(pal.convert("RGB"))  # palette looked up
    if mode == "I;16":
        # full 16-bit range: kept as the high byte, not clipped at 255
        values = rng.integers(0, 65536, rgb.shape[:2]).astype(np.uint16)
        g = (values >> 8).astype(np.uint8)
        return Image.fromarray(values), np.stack([g] * 3, axis=-1)
    if mode == "1":
        bits = rgb[..., 0] > 127
        return Image.fromarray(bits), np.stack([bits.astype(np.uint8) * 255] * 3, axis=-1)
    raise AssertionError(mode)


@pytest.mark.parametrize("mapper_name", ALL_MAPPERS)
@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "1"])
def test_image_modes_become_the_input_format(data, tmp_path, mapper_name, mode):
    d = _sample(data, mapper_name)
    image, expected = _as_mode(_rgb(d), mode)
    path = tmp_path / "image.png"
    image.save(path)
    assert Image.open(path).mode == mode
    d["file_name"] = str(path)
    np.testing.assert_array_equal(_hwc(_plain_mapper(mapper_name)(d)), expected)
    bgr = _hwc(_plain_mapper(mapper_name, image_format="BGR")(d))
    np.testing.assert_array_equal(bgr, expected[:, :, ::-1])


def test_cmyk_jpeg_and_unsupported_modes(data, tmp_path):
    d = _sample(data, "mask_former_semantic")
    Image.new("CMYK", (128, 128), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    out = _plain_mapper("mask_former_semantic")(dict(d, file_name=str(tmp_path / "cmyk.jpg")))
    assert (np.abs(_hwc(out).astype(int) - [255, 0, 0]) <= 2).all()
    # 32-bit float (TIFF) and 32-bit integer values beyond 16 bits: no meaningful 8-bit image
    Image.fromarray(np.zeros((128, 128), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"float\.tif: floating-point image \(PIL mode F\)"):
        _plain_mapper("mask_former_semantic")(dict(d, file_name=str(tmp_path / "float.tif")))
    Image.fromarray(np.full((128, 128), 70000, np.int32)).save(tmp_path / "int32.tif")
    with pytest.raises(ValueError, match=r"int32\.tif: integer image .* 70000\.\.70000"):
        _plain_mapper("mask_former_semantic")(dict(d, file_name=str(tmp_path / "int32.tif")))


# ---------------------------------------------------------------- EXIF orientation
EXIF_ORIENTATION = 0x0112


def _exif_jpeg(display: np.ndarray, path) -> None:
    """Stores `display` rotated, with the EXIF orientation (6) that shows it upright."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    stored = Image.fromarray(display).transpose(Image.ROTATE_90)
    stored.save(path, quality=100, subsampling=0, exif=exif)


@pytest.mark.parametrize("mapper_name", ["mask_former_semantic", "mask_former_panoptic"])
def test_exif_rotated_jpeg_aligns_with_upright_labels(data, tmp_path, mapper_name):
    d = _sample(data, mapper_name)
    kind = MAPPER_DATASET[mapper_name]
    # a non-square sample, so that a label of the stored (unrotated) orientation cannot fit
    display = _rgb(d)[:, :96]
    labels = np.asarray(Image.open(d[LABEL_KEY[kind]]))[:, :96]
    Image.fromarray(labels).save(tmp_path / "upright.png")
    _exif_jpeg(display, tmp_path / "rotated.jpg")
    assert Image.open(tmp_path / "rotated.jpg").size == (128, 96), "stored rotated"
    d.update(file_name=str(tmp_path / "rotated.jpg"), width=96, height=128)
    d[LABEL_KEY[kind]] = str(tmp_path / "upright.png")
    if kind == "panoptic":
        present = set(np.unique(rgb2id(labels)).tolist())
        d["segments_info"] = [s for s in d["segments_info"] if s["id"] in present]
    out = _plain_mapper(mapper_name)(d)
    assert np.abs(_hwc(out).astype(int) - display).mean() < 2.0, "read upright"
    expected_sem = (
        labels if kind == "sem_seg" else np.asarray(Image.open(d["sem_seg_file_name"]))[:, :96]
    )
    np.testing.assert_array_equal(out["sem_seg"].numpy(), expected_sem)

    # labels drawn on the stored pixels: the sizes differ, and the error says why
    Image.fromarray(np.ascontiguousarray(np.rot90(labels))).save(tmp_path / "stored.png")
    d[LABEL_KEY[kind]] = str(tmp_path / "stored.png")
    with pytest.raises(
        ValueError, match=r"rotated\.jpg is 128x96 .*/stored\.png are 96x128.*EXIF orientation 6"
    ):
        _plain_mapper(mapper_name)(d)


# ---------------------------------------------------------------- labels that do not fit
@pytest.mark.parametrize("mapper_name", ALL_MAPPERS)
def test_label_size_differs_from_image(data, tmp_path, mapper_name):
    d = _sample(data, mapper_name)
    kind = MAPPER_DATASET[mapper_name]
    mapper = build_train_mapper(_cfg(mapper_name))
    if kind == "instance":
        mask = np.zeros((100, 128), np.uint8, order="F")
        mask[10:20, 10:20] = 1
        d["annotations"][0]["segmentation"] = mask_util.encode(mask)
        with pytest.raises(
            ValueError,
            match=r"000001\.jpg: a segmentation mask of size \(100, 128\) for an image of size \(128, 128\)",
        ):
            mapper(d)
        return
    label = Image.open(d[LABEL_KEY[kind]])
    label.resize((128, 100), Image.NEAREST).save(tmp_path / "small_label.png")
    d[LABEL_KEY[kind]] = str(tmp_path / "small_label.png")
    with pytest.raises(
        ValueError,
        match=r"000001\.jpg is 128x128 \(HxW\) but its labels .*small_label\.png are 100x128$",
    ):
        mapper(d)


@pytest.mark.parametrize("mapper_name", PANOPTIC_MAPPERS)
def test_segment_absent_from_png(data, mapper_name):
    d = _sample(data, mapper_name)
    d["segments_info"].append({"id": 4242, "category_id": 1, "iscrowd": 0, "isthing": True})
    with pytest.raises(
        ValueError, match=r"000001\.png: segment id 4242 of segments_info is absent"
    ):
        build_train_mapper(_cfg(mapper_name))(d)


@pytest.mark.parametrize("mapper_name", PANOPTIC_MAPPERS + INSTANCE_MAPPERS)
def test_category_id_not_in_metadata(data, mapper_name):
    d = _sample(data, mapper_name)
    annos = d["segments_info"] if mapper_name in PANOPTIC_MAPPERS else d["annotations"]
    annos[0]["category_id"] = 8 if mapper_name in PANOPTIC_MAPPERS else 5
    with pytest.raises(ValueError, match=r"category id (8|5), not among the metadata's (8|5)"):
        build_train_mapper(_cfg(mapper_name))(d)


@pytest.mark.parametrize("dataset", ["sem_seg", "panoptic"])
def test_semantic_label_out_of_range(data, tmp_path, dataset):
    d = copy.deepcopy(data[dataset][0])
    sem = np.array(Image.open(d["sem_seg_file_name"]))
    sem[5, 5] = 8  # classes are 0..7, 255 ignored
    Image.fromarray(sem).save(tmp_path / "bad_sem.png")
    d["sem_seg_file_name"] = str(tmp_path / "bad_sem.png")
    mapper = build_train_mapper(_cfg("mask_former_semantic", dataset=f"{PREFIX}_{dataset}_train"))
    with pytest.raises(ValueError, match=r"bad_sem\.png: labels \[8\] are not category ids"):
        mapper(d)


# ---------------------------------------------------------------- the model on odd samples
@pytest.fixture(scope="module")
def model(data):
    torch.manual_seed(0)
    opts = {
        "DATASETS.TRAIN": f"('{PREFIX}_panoptic_train',)",
        "DATASETS.TEST": "()",
        # the reference configs' norm: trainable BN cannot train on one 1x1 res5 map
        "MODEL.RESNETS.NORM": "FrozenBN",
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": "8",
        "MODEL.MASK_FORMER.DEC_LAYERS": "2",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": "256",
        "INPUT.MIN_SIZE_TEST": "64",
        "INPUT.MAX_SIZE_TEST": "128",
    }
    cfg = load_cfg("configs/synthetic/panoptic.yaml", _flat(opts))
    return cfg, build_model(cfg)


def _train_losses(model, samples):
    model.train()
    losses = model(samples)
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    model.zero_grad()
    return losses


def _empty(d, kind, tmp_path):
    """The sample with nothing annotated (all-ignore semantic map, no segment, no annotation)."""
    d = copy.deepcopy(d)
    if kind == "instance":
        d["annotations"] = []
    elif kind == "panoptic":
        d["segments_info"] = []
    else:
        Image.fromarray(np.full((128, 128), 255, np.uint8)).save(tmp_path / "void.png")
        d["sem_seg_file_name"] = str(tmp_path / "void.png")
    return d


@pytest.mark.parametrize("mapper_name", ALL_MAPPERS)
def test_image_without_annotations_trains(data, model, tmp_path, mapper_name):
    torch.set_num_threads(1)
    kind = MAPPER_DATASET[mapper_name]
    mapper = build_train_mapper(_cfg(mapper_name, SIZE_DIVISIBILITY=32, IMAGE_SIZE=64))
    empty = mapper(_empty(data[kind][0], kind, tmp_path))
    assert len(empty["instances"]) == 0
    assert empty["instances"].gt_masks.shape == (0, *empty["image"].shape[1:])
    if "sem_seg" in empty:
        assert (empty["sem_seg"] == 255).all()
    # alone (no target in the batch) and next to an annotated image
    alone = _train_losses(model[1], [empty])
    assert alone["loss_mask"] == 0 and alone["loss_dice"] == 0 and alone["loss_ce"] > 0
    mixed = _train_losses(model[1], [empty, mapper(data[kind][1])])
    assert mixed["loss_mask"] > 0


def _resized_sample(data, h, w, tmp_path):
    """Copies of the first sample resized to h x w, as {kind: dataset dict}, written to files."""
    pan_d = data["panoptic"][0]
    name = f"{h}x{w}"
    Image.open(pan_d["file_name"]).resize((w, h), Image.BILINEAR).save(tmp_path / f"{name}.jpg")
    pan = Image.open(pan_d["pan_seg_file_name"]).resize((w, h), Image.NEAREST)
    pan.save(tmp_path / f"{name}_pan.png")
    sem = Image.open(pan_d["sem_seg_file_name"]).resize((w, h), Image.NEAREST)
    sem.save(tmp_path / f"{name}_sem.png")
    ids = rgb2id(np.asarray(pan))
    segments = [s for s in pan_d["segments_info"] if (ids == s["id"]).any()]
    base = {"file_name": str(tmp_path / f"{name}.jpg"), "height": h, "width": w, "image_id": 1}
    annotations = []
    for s in segments:
        if s["isthing"]:
            rle = mask_util.encode(np.asfortranarray((ids == s["id"]).astype(np.uint8)))
            box = mask_util.toBbox(rle).tolist()
            annotations.append(
                {
                    "segmentation": rle,
                    "category_id": s["category_id"],
                    "iscrowd": 0,
                    "bbox": box,
                    "bbox_mode": BoxMode.XYWH_ABS,
                }
            )
    assert annotations and segments
    return {
        "panoptic": dict(
            base,
            pan_seg_file_name=str(tmp_path / f"{name}_pan.png"),
            sem_seg_file_name=str(tmp_path / f"{name}_sem.png"),
            segments_info=segments,
        ),
        "sem_seg": dict(base, sem_seg_file_name=str(tmp_path / f"{name}_sem.png")),
        "instance": dict(base, annotations=annotations),
    }


SIZES = [(20, 30), (16, 1000), (1000, 16)]


@pytest.mark.parametrize("mapper_name", ALL_MAPPERS)
def test_small_and_thin_images_through_mapper_and_model(data, model, tmp_path, mapper_name):
    torch.set_num_threads(1)
    kind = MAPPER_DATASET[mapper_name]
    # no upscaling: the 20x30 image stays smaller than the 64x64 crop; LSJ scales down to 1/10
    cfg = _cfg(
        mapper_name,
        MIN_SIZE_TRAIN=(20,),
        MAX_SIZE_TRAIN=1000,
        SIZE_DIVISIBILITY=32,
        IMAGE_SIZE=64,
        MIN_SCALE=0.1,
        MAX_SCALE=2.0,
    )
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (64, 64)
    mapper = build_train_mapper(cfg)
    np.random.seed(0)
    for h, w in SIZES:
        d = _resized_sample(data, h, w, tmp_path)[kind]
        for _ in range(3):
            out = mapper(d)
            image, inst = out["image"], out["instances"]
            if mapper_name.endswith("_lsj"):
                assert image.shape == (3, 64, 64)
            else:
                assert image.shape[1] % 32 == 0 and image.shape[2] % 32 == 0
                assert image.shape[1] <= max(32, min(h, 64) + 31)
                assert image.shape[2] <= max(32, min(w, 64) + 31)
            assert inst.gt_masks.shape == (len(inst), *image.shape[1:])
            assert all(m.any() for m in inst.gt_masks)
            if "sem_seg" in out:
                assert out["sem_seg"].shape == image.shape[1:]
        _train_losses(model[1], [out])


def test_lsj_keeps_one_pixel_of_a_thin_image(data, tmp_path):
    d = _resized_sample(data, 16, 1000, tmp_path)["panoptic"]
    # 1000 px scaled to 64 * 0.1: the 16 px side would round to 0 rows
    cfg = _cfg("coco_panoptic_lsj", IMAGE_SIZE=64, MIN_SCALE=0.1, MAX_SCALE=0.1, RANDOM_FLIP="none")
    out = build_train_mapper(cfg)(d)
    image = out["image"]
    assert image.shape == (3, 64, 64)
    content = (image != 128).any(dim=0)  # LSJ pads the image with 128
    assert content[0, :6].all() and not content[1:].any() and not content[:, 7:].any()


@pytest.mark.parametrize("h,w", SIZES)
def test_small_and_thin_images_at_inference(model, tmp_path, h, w):
    cfg, net = model
    Image.new("RGB", (w, h), (90, 40, 200)).save(tmp_path / "eval.png")
    d = {"file_name": str(tmp_path / "eval.png"), "height": h, "width": w}
    inputs = DatasetMapper(cfg, is_train=False)(d)
    net.eval()
    with torch.no_grad():
        (out,) = net([inputs])
    assert out["sem_seg"].shape == (8, h, w) and torch.isfinite(out["sem_seg"]).all()
    assert out["panoptic_seg"][0].shape == (h, w)
    assert out["instances"].image_size == (h, w)


# ---------------------------------------------------------------- DATALOADER.SKIP_BAD_SAMPLES
def _register_with_bad_files(data, name, bad_indices, tmp_path):
    """A copy of the 3-image panoptic split whose images at `bad_indices` are corrupt."""
    dicts = copy.deepcopy(data["panoptic"])
    for i in bad_indices:
        path = tmp_path / f"corrupt_{i}.jpg"
        path.write_bytes(b"\xff\xd8 not really a jpeg")
        dicts[i]["file_name"] = str(path)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: copy.deepcopy(dicts))
    meta = MetadataCatalog.get(f"{PREFIX}_panoptic_train").as_dict()
    meta.pop("name")
    MetadataCatalog.get(name).set(**meta)
    return dicts


def _loader(name, skip, num_workers=0):
    cfg = _cfg("mask_former_panoptic", dataset=name)
    cfg.DATALOADER.SKIP_BAD_SAMPLES = skip
    cfg.DATALOADER.NUM_WORKERS = num_workers
    cfg.SOLVER.IMS_PER_BATCH = 2
    return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_bad_sample_stops_the_loader_by_default(data, tmp_path, num_workers):
    name = f"{PREFIX}_one_corrupt_w{num_workers}"
    _register_with_bad_files(data, name, [1], tmp_path)
    # (from a worker the error comes back as another exception type, with the same message)
    message = _first_error(name, num_workers)
    assert re.search(r"Cannot read image file .*corrupt_1\.jpg", message)
    # free the failed loader's worker now (torch waits 5 s for it) rather than in a later test
    gc.collect()


def _first_error(name, num_workers, max_batches=20) -> str:
    """The message of the error that stops the train loader of `name` without skipping."""
    batches = iter(_loader(name, skip=False, num_workers=num_workers))
    try:
        for _ in range(max_batches):
            next(batches)
    except Exception as e:  # the message only: a kept traceback would keep the workers alive
        return str(e)
    raise AssertionError(f"{max_batches} batches without an error")


def test_bad_sample_is_skipped_when_asked(data, tmp_path, warnings_of):
    name = f"{PREFIX}_one_corrupt_skip"
    dicts = _register_with_bad_files(data, name, [1], tmp_path)
    records = warnings_of(BUILD_LOGGER)
    seen = []
    for batch in itertools.islice(_loader(name, skip=True), 6):
        assert len(batch) == 2
        seen += [x["file_name"] for x in batch]
    assert set(seen) == {dicts[0]["file_name"], dicts[2]["file_name"]}
    messages = [r.getMessage() for r in records]
    assert messages and all(
        "corrupt_1.jpg" in m and "Skipped a bad training sample" in m for m in messages
    )


def test_all_bad_samples_stop_the_run(data, tmp_path, warnings_of):
    name = f"{PREFIX}_all_corrupt"
    _register_with_bad_files(data, name, [0, 1, 2], tmp_path)
    records = warnings_of(BUILD_LOGGER)
    # fewer samples than the consecutive-failure limit: detectron2's MapDataset runs out of
    # samples to try and raises by itself, after each file was named in a warning
    with pytest.raises(ValueError):
        next(iter(_loader(name, skip=True)))
    logged = " ".join(r.getMessage() for r in records)
    assert all(f"corrupt_{i}.jpg" in logged for i in range(3))
    # the limit, reached first on a larger broken dataset
    mapper = SkipBadSamples(build_train_mapper(_cfg("mask_former_panoptic", dataset=name)), 2)
    dicts = DatasetCatalog.get(name)
    assert mapper(dicts[0]) is None
    with pytest.raises(RuntimeError, match=r"2 training samples in a row .*corrupt_1\.jpg"):
        mapper(dicts[1])


def test_skip_wrapper_counts_rate_limits_and_lets_bugs_through(warnings_of):
    def flaky(d):
        if d["file_name"].startswith("bad"):
            raise OSError(f"Cannot read image file {d['file_name']}")
        if d["file_name"] == "bug":
            raise TypeError("a programming error")
        return {"ok": d["file_name"]}

    records = warnings_of(BUILD_LOGGER)
    mapper = SkipBadSamples(flaky, max_consecutive_failures=3)
    for i in range(8):
        assert mapper({"file_name": f"bad{i}.jpg"}) is None
        assert mapper({"file_name": "good.jpg"}) == {"ok": "good.jpg"}
    assert mapper.num_skipped == 8 and mapper.consecutive_failures == 0
    logged = [r.getMessage() for r in records]
    assert [m.split()[5] for m in logged] == ["bad0.jpg", "bad1.jpg", "bad3.jpg", "bad7.jpg"]
    assert mapper({"file_name": "bad8.jpg"}) is None and mapper({"file_name": "bad9.jpg"}) is None
    assert "bad9.jpg" in records[-1].getMessage(), "every failure of a run is logged"
    with pytest.raises(TypeError):
        mapper({"file_name": "bug"})
    # a missing dataset dict field is a bad sample too
    assert SkipBadSamples(lambda d: d["segments_info"])({"file_name": "x.jpg"}) is None


def test_trainer_skips_a_bad_sample(data, tmp_path, warnings_of):
    import train_net

    torch.set_num_threads(1)
    name = f"{PREFIX}_one_corrupt_trainer"
    _register_with_bad_files(data, name, [1], tmp_path)
    records = warnings_of(BUILD_LOGGER)
    opts = {
        "MODEL.DEVICE": "cpu",
        "OUTPUT_DIR": str(tmp_path / "out"),
        "DATASETS.TRAIN": f"('{name}',)",
        "DATASETS.TEST": "()",
        "DATALOADER.SKIP_BAD_SAMPLES": "True",
        "SOLVER.IMS_PER_BATCH": "2",
        "SOLVER.MAX_ITER": "3",  # 6 samples: two shuffles of the 3 images, so the bad one is drawn
        "SOLVER.CHECKPOINT_PERIOD": "1000",
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": "8",
        "MODEL.MASK_FORMER.DEC_LAYERS": "2",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": "256",
        "INPUT.MIN_SIZE_TRAIN": "(64,)",
    }
    argv = ["--config-file", os.path.join(REPO, "configs", "synthetic", "panoptic.yaml")]
    args = train_net.default_argument_parser().parse_args(argv + _flat(opts))
    cfg, _ = train_net.build_config(args)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 3  # all iterations ran
    assert records and all("corrupt_1.jpg" in r.getMessage() for r in records)


def test_skip_bad_samples_is_off_by_default_and_wraps_when_on(data):
    cfg = _cfg("mask_former_panoptic")
    assert cfg.DATALOADER.SKIP_BAD_SAMPLES is False
    assert isinstance(build_train_mapper(cfg), MAPPERS["mask_former_panoptic"])
    cfg.DATALOADER.SKIP_BAD_SAMPLES = True
    mapper = build_train_mapper(cfg)
    assert isinstance(mapper, SkipBadSamples)
    assert isinstance(mapper.mapper, MAPPERS["mask_former_panoptic"])


# ---------------------------------------------------------------- config checks
def test_misspelt_key_is_a_one_line_error():
    cfg = _cfg("mask_former_panoptic")
    with pytest.raises(ConfigError) as e:
        merge_config_opts(cfg, ["DATALOADER.SKIP_BAD_SAMPLE", "True"])
    assert str(e.value) == (
        "Unknown config key 'DATALOADER.SKIP_BAD_SAMPLE' given on the command line"
    )


def test_unknown_mapper_name_lists_the_known_ones(data):
    cfg = _cfg("mask_former_semantic")
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_panoptc"
    with pytest.raises(ValueError) as e:
        build_train_mapper(cfg)
    message = str(e.value)
    assert "'mask_former_panoptc'" in message
    assert all(name in message for name in MAPPERS)


@pytest.mark.parametrize("mapper_name", ALL_MAPPERS)
def test_num_classes_must_match_the_training_metadata(data, mapper_name):
    cfg = _cfg(mapper_name)
    right = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = right + 2
    key = "thing_classes" if mapper_name in INSTANCE_MAPPERS else "stuff_classes"
    dataset = cfg.DATASETS.TRAIN[0]
    with pytest.raises(
        ValueError,
        match=rf"Dataset '{dataset}' has {right} classes .*'{key}'.*NUM_CLASSES={right + 2}",
    ):
        build_train_mapper(cfg)
    # every training dataset is checked, not only the first
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = right
    other = "tbadinput_other_classes"
    MetadataCatalog.get(other).set(stuff_classes=["a"] * 3, thing_classes=["a"] * 3)
    cfg.DATASETS.TRAIN = (dataset, other)
    with pytest.raises(ValueError, match=rf"'{other}' has 3 classes"):
        build_train_mapper(cfg)


def _model_configs():
    paths = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
    # Base-* files leave NUM_CLASSES to the model configs that include them; the video configs
    # (video keys, video mappers) are checked under tests/video/
    return [
        os.path.relpath(p, REPO) for p in paths
        if not os.path.basename(p).startswith(("Base-", "video_")) and "youtubevis" not in p
    ]


@pytest.mark.parametrize("path", _model_configs())
def test_every_config_agrees_with_its_training_metadata(path):
    cfg = load_cfg(path)
    registered = DatasetCatalog.list()
    missing = [n for n in cfg.DATASETS.TRAIN if n not in registered]
    if missing:
        pytest.skip(f"{path}: DATASETS.TRAIN {missing} not registered")
    task = MAPPERS[cfg.INPUT.DATASET_MAPPER_NAME].task
    for name in cfg.DATASETS.TRAIN:
        assert dataset_num_classes(name, task) == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, name
    build_train_mapper(cfg)  # the same check, as run at training time; needs no dataset file


# ---------------------------------------------------------------- evaluation mapper
def _eval_cfg(min_size=64):
    cfg = load_cfg("configs/synthetic/panoptic.yaml", ["INPUT.MIN_SIZE_TEST", str(min_size), "INPUT.MAX_SIZE_TEST", "1000"])
    return cfg


def test_eval_mapper_reads_16bit_and_thin_images_and_names_missing_files(tmp_path):
    from mask2former.data.dataset_mappers import MaskFormerTestDatasetMapper

    mapper = MaskFormerTestDatasetMapper(_eval_cfg())
    values = np.array([[0, 256, 40000, 65535]] * 3, dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # 16-bit grayscale
    out = mapper({"file_name": str(tmp_path / "deep.png"), "image_id": 0})
    assert out["image"].dtype == torch.uint8 and out["image"].shape[0] == 3
    # high byte kept (v >> 8), not clipped to white: the darkest column stays dark
    assert out["image"][:, :, 0].max() < 5 and out["image"][:, :, -1].min() > 200

    Image.fromarray(np.full((1, 300, 3), 128, np.uint8)).save(tmp_path / "thin.png")
    thin = mapper({"file_name": str(tmp_path / "thin.png"), "image_id": 1})
    assert min(thin["image"].shape[1:]) >= 1  # resized, never to 0 pixels
    assert (thin["height"], thin["width"]) == (1, 300)

    with pytest.raises(FileNotFoundError, match="missing.png"):
        mapper({"file_name": str(tmp_path / "missing.png"), "image_id": 2})
