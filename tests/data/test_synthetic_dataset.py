"""The synthetic dataset: deterministic generation, valid COCO formats, lazy registration."""

import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BitMasks, Instances
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools.coco import COCO

from mask2former.data.synthetic import (
    GENERATOR_VERSION,
    IMAGE_SIZE,
    ensure_synthetic_dataset,
    load_synthetic_categories,
    register_all_synthetic,
)
from mask2former.data.synthetic.scene import VOID, render_scene
from model_utils import REPO

NUM_TRAIN, NUM_VAL = 6, 3


def _md5s(dataset_dir):
    out = {}
    for dirpath, _, files in os.walk(dataset_dir):
        for f in files:
            if f != ".lock":
                path = os.path.join(dirpath, f)
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, dataset_dir)] = hashlib.md5(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    ensure_synthetic_dataset(root, NUM_TRAIN, NUM_VAL, seed=0)
    return root


@pytest.fixture(scope="module")
def registered(root):
    register_all_synthetic(root, prefix="tsynth")
    return "tsynth"


def _read(path):
    return np.asarray(Image.open(path))


def test_files_and_marker(root):
    d = os.path.join(root, "synthetic")
    for split, n in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        assert len(os.listdir(os.path.join(d, "images", split))) == n
        assert len(os.listdir(os.path.join(d, f"panoptic_{split}"))) == n
        assert len(os.listdir(os.path.join(d, f"semantic_{split}"))) == n
        image = _read(os.path.join(d, "images", split, "000001.jpg"))
        assert image.shape == (*IMAGE_SIZE, 3) and image.dtype == np.uint8
    with open(os.path.join(d, ".generated.json")) as f:
        marker = json.load(f)
    assert marker["generator_version"] == GENERATOR_VERSION
    assert (marker["num_train"], marker["num_val"], marker["seed"]) == (NUM_TRAIN, NUM_VAL, 0)


def test_deterministic(root, tmp_path):
    reference = _md5s(os.path.join(root, "synthetic"))
    ensure_synthetic_dataset(str(tmp_path / "a"), NUM_TRAIN, NUM_VAL, seed=0)
    assert _md5s(str(tmp_path / "a" / "synthetic")) == reference
    # images depend on (seed, split, index) only: a shorter train split is a prefix
    ensure_synthetic_dataset(str(tmp_path / "b"), 2, NUM_VAL, seed=0)
    other = _md5s(str(tmp_path / "b" / "synthetic"))
    assert other["images/train/000002.jpg"] == reference["images/train/000002.jpg"]
    assert other["panoptic_val/000003.png"] == reference["panoptic_val/000003.png"]
    ensure_synthetic_dataset(str(tmp_path / "c"), 2, 1, seed=1)
    assert (
        _md5s(str(tmp_path / "c" / "synthetic"))["images/train/000001.jpg"]
        != reference["images/train/000001.jpg"]
    )


def test_regenerates_only_when_stale(tmp_path):
    d = ensure_synthetic_dataset(str(tmp_path), 2, 1, seed=0)
    marker = os.path.join(d, ".generated.json")
    image = os.path.join(d, "images", "train", "000001.jpg")
    os.utime(image, (0, 0))
    ensure_synthetic_dataset(str(tmp_path))  # up to date, whatever the counts: untouched
    assert os.stat(image).st_mtime == 0
    with open(marker) as f:
        content = json.load(f)
    with open(marker, "w") as f:
        json.dump(dict(content, generator_version=-1), f)
    ensure_synthetic_dataset(str(tmp_path))  # another generator version: regenerated
    assert os.stat(image).st_mtime > 0
    with open(marker) as f:
        assert json.load(f) == content
    os.remove(marker)  # an interrupted generation leaves no marker
    os.utime(image, (0, 0))
    ensure_synthetic_dataset(str(tmp_path), 2, 1)
    assert os.stat(image).st_mtime > 0 and os.path.exists(marker)
    ensure_synthetic_dataset(str(tmp_path), 3, 1)  # other counts asked for explicitly
    assert len(os.listdir(os.path.join(d, "images", "train"))) == 3


def _ensure_in_subprocess(root):
    ensure_synthetic_dataset(root, NUM_TRAIN, NUM_VAL, seed=0)


def test_concurrent_generation(root, tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_ensure_in_subprocess, args=(str(tmp_path),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert _md5s(str(tmp_path / "synthetic")) == _md5s(os.path.join(root, "synthetic"))


@pytest.mark.parametrize("split", ["train", "val"])
def test_formats_agree(root, split):
    d = os.path.join(root, "synthetic")
    cats = load_synthetic_categories()
    contiguous = {c["id"]: i for i, c in enumerate(cats)}
    thing_ids = {c["id"] for c in cats if c["isthing"]}
    with open(os.path.join(d, "annotations", f"panoptic_{split}.json")) as f:
        panoptic = json.load(f)
    assert {c["id"]: c["isthing"] for c in panoptic["categories"]} == {
        c["id"]: c["isthing"] for c in cats
    }
    ids = sorted(c["id"] for c in panoptic["categories"])
    assert ids != list(range(1, len(ids) + 1)), "category ids should have gaps, like COCO's"

    coco = COCO(os.path.join(d, "annotations", f"instances_{split}.json"))
    assert sorted(coco.getCatIds()) == [c["id"] for c in cats if c["isthing"]]
    for ann in panoptic["annotations"]:
        pan = rgb2id(_read(os.path.join(d, f"panoptic_{split}", ann["file_name"])))
        segments = ann["segments_info"]
        present = set(np.unique(pan).tolist()) - {0}
        assert present == {s["id"] for s in segments}
        for s in segments:
            mask = pan == s["id"]
            ys, xs = np.nonzero(mask)
            assert s["area"] == mask.sum() > 0
            assert s["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
        # the instance json holds exactly the thing segments, as RLE of the same masks
        thing_masks = sorted(
            (s["category_id"], (pan == s["id"]).tobytes())
            for s in segments
            if s["category_id"] in thing_ids
        )
        inst = sorted(
            (a["category_id"], coco.annToMask(a).astype(bool).tobytes())
            for a in coco.loadAnns(coco.getAnnIds(imgIds=[ann["image_id"]]))
        )
        assert inst == thing_masks and len(inst) >= 1
        # the semantic PNG is the panoptic labels mapped to contiguous ids, 255 unlabeled
        expected = np.full(pan.shape, 255, np.uint8)
        for s in segments:
            expected[pan == s["id"]] = contiguous[s["category_id"]]
        np.testing.assert_array_equal(
            _read(os.path.join(d, f"semantic_{split}", ann["file_name"])), expected
        )


def test_scenes_are_varied_and_learnable():
    cats = load_synthetic_categories()
    num_things = sum(c["isthing"] for c in cats)
    seen, objects, void_scenes = set(), [], 0
    for i in range(40):
        scene = render_scene(np.random.default_rng(i), cats, *IMAGE_SIZE)
        cat_of = np.asarray(scene.segment_categories)
        for k, c in enumerate(cat_of):
            seen.add(int(c))
            if c < num_things:
                objects.append(int((scene.segment_map == k).sum()))
        assert (cat_of < num_things).sum() >= 1, "every scene has an object"
        void_scenes += int((scene.segment_map == VOID).any())
    assert seen == set(range(len(cats)))
    assert min(objects) >= 0.012 * IMAGE_SIZE[0] * IMAGE_SIZE[1]
    assert 0 < void_scenes < 40


def test_registered_datasets(registered, root):
    p = registered
    meta = MetadataCatalog.get(f"{p}_panoptic_train")
    assert meta.thing_classes == ["disk", "box", "triangle", "star", "ring"]
    assert meta.stuff_classes == meta.thing_classes + ["sky", "grass", "water"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 4: 2, 7: 3, 9: 4}
    assert meta.stuff_dataset_id_to_contiguous_id[25] == 7
    assert (meta.evaluator_type, meta.ignore_label, meta.label_divisor) == (
        "coco_panoptic_seg",
        255,
        1000,
    )
    assert os.path.isfile(meta.json_file) and os.path.isfile(meta.panoptic_json)

    pan = DatasetCatalog.get(f"{p}_panoptic_train")
    assert len(pan) == NUM_TRAIN
    for d in pan:
        assert os.path.isfile(d["file_name"]) and os.path.isfile(d["pan_seg_file_name"])
        assert os.path.isfile(d["sem_seg_file_name"])
        for s in d["segments_info"]:
            assert 0 <= s["category_id"] < 8 and s["isthing"] == (s["category_id"] < 5)

    inst = DatasetCatalog.get(f"{p}_instance_val")
    assert (
        len(inst) == NUM_VAL and MetadataCatalog.get(f"{p}_instance_val").evaluator_type == "coco"
    )
    cats = {a["category_id"] for d in inst for a in d["annotations"]}
    assert cats <= set(range(5)) and all(
        isinstance(a["segmentation"], dict) for d in inst for a in d["annotations"]
    )

    sem = DatasetCatalog.get(f"{p}_sem_seg_val")
    meta = MetadataCatalog.get(f"{p}_sem_seg_val")
    assert len(sem) == NUM_VAL and meta.evaluator_type == "sem_seg" and len(meta.stuff_classes) == 8
    assert register_all_synthetic(root, prefix=p) == []  # again: nothing new
    with pytest.raises(ValueError, match="already registered"):
        register_all_synthetic(os.path.join(root, "elsewhere"), prefix=p)


def test_registration_is_lazy(tmp_path):
    names = register_all_synthetic(str(tmp_path), prefix="tlazy")
    assert len(names) == 6 and not os.path.exists(tmp_path / "synthetic")
    # the loader generates the data on first use (with the default counts; kept tiny here)
    ensure_synthetic_dataset(str(tmp_path), 2, 1)
    assert len(DatasetCatalog.get("tlazy_sem_seg_train")) == 2


def test_gt_scores_perfectly_in_detectron2_evaluators(registered):
    """The files are in the formats detectron2's evaluators read: ground truth scores 100."""
    from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator

    name = f"{registered}_panoptic_val"
    dicts = DatasetCatalog.get(name)
    pan_eval = COCOPanopticEvaluator(name)
    coco_eval = COCOEvaluator(name, tasks=("segm",), distributed=False)
    sem_eval = SemSegEvaluator(name, distributed=False)
    for e in (pan_eval, coco_eval, sem_eval):
        e.reset()
    for d in dicts:
        pan = rgb2id(_read(d["pan_seg_file_name"]))
        sem = _read(d["sem_seg_file_name"]).astype(np.int64)
        things = [s for s in d["segments_info"] if s["isthing"]]
        inst = Instances(pan.shape)
        inst.pred_masks = torch.from_numpy(np.stack([pan == s["id"] for s in things]))
        inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
        inst.pred_classes = torch.tensor([s["category_id"] for s in things])
        inst.scores = torch.ones(len(things))
        # semantic logits: one-hot of the ground truth (ignored pixels: any class)
        logits = torch.nn.functional.one_hot(torch.from_numpy(np.where(sem == 255, 0, sem)), 8)
        inputs = [
            {"file_name": d["file_name"], "image_id": d["image_id"], "height": 128, "width": 128}
        ]
        outputs = [
            {
                "panoptic_seg": (torch.from_numpy(pan.astype(np.int32)), d["segments_info"]),
                "instances": inst,
                "sem_seg": logits.permute(2, 0, 1).float(),
            }
        ]
        for e in (pan_eval, coco_eval, sem_eval):
            e.process(inputs, outputs)
    assert pan_eval.evaluate()["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert coco_eval.evaluate()["segm"]["AP"] == pytest.approx(100.0)
    assert sem_eval.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_cli(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mask2former.data.synthetic",
            "--root",
            str(tmp_path),
            "--num-train",
            "2",
            "--num-val",
            "1",
            "--seed",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "synthetic")
    with open(tmp_path / "synthetic" / ".generated.json") as f:
        marker = json.load(f)
    assert (marker["num_train"], marker["num_val"], marker["seed"]) == (2, 1, 3)
