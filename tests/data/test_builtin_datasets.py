"""
Registration of the built-in datasets (names, metadata, lazy loaders) and the preparation
scripts under datasets/, on tiny generated data.
"""
import contextlib
import importlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES, COCO_CATEGORIES

import mask2former.data.datasets  # noqa: F401  (registers the datasets)
from mask2former.data.dataset_mappers import MaskFormerPanopticDatasetMapper
from mask2former.data.datasets import builtin, check_num_classes, load_metadata_table
from mask2former.data.datasets.register_ade20k_full import register_all_ade20k_full
from mask2former.data.datasets.register_ade20k_instance import register_all_ade20k_instance
from mask2former.data.datasets.register_ade20k_panoptic import register_all_ade20k_panoptic
from mask2former.data.datasets.register_coco_panoptic_annos_semseg import register_all_coco_panoptic_annos_sem_seg
from mask2former.data.datasets.register_coco_stuff_10k import register_all_coco_stuff_10k
from mask2former.data.datasets.register_mapillary_vistas import register_all_mapillary_vistas
from model_utils import REFERENCE_DATASETS

INSTANCE_CATEGORY_FILES = [
    "--category-mapping", os.path.join(REFERENCE_DATASETS, "ade20k_instance_catid_mapping.txt"),
    "--categories-json", os.path.join(REFERENCE_DATASETS, "ade20k_instance_imgCatIds.json"),
]


def _script(name):
    """A preparation script, imported as ``python -m datasets.<name>`` runs it."""
    return importlib.import_module("datasets." + name)


@contextlib.contextmanager
def registered_at(root, *register_fns):
    """Point some built-in dataset families at ``root``, and back to the default root after."""
    for fn in register_fns:
        fn(str(root))
    try:
        yield
    finally:
        for fn in register_fns:
            fn(builtin._root)


def _save_jpg(path, h=8, w=10):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


# ---------------------------------------------------------------- names and metadata


@pytest.mark.parametrize("name,evaluator_type", sorted(builtin.BUILTIN_DATASETS.items()))
def test_builtin_names_registered(name, evaluator_type):
    assert name in DatasetCatalog.list()
    assert MetadataCatalog.get(name).evaluator_type == evaluator_type


@pytest.mark.parametrize(
    "name,num_stuff,num_things",
    [
        ("coco_2017_train_panoptic_with_sem_seg", 133, 80),
        ("coco_2017_val_panoptic_with_sem_seg", 133, 80),
        ("coco_2017_train_stuff_10k_sem_seg", 171, None),
        ("coco_2017_test_stuff_10k_sem_seg", 171, None),
        ("ade20k_full_sem_seg_train", 847, None),
        ("ade20k_panoptic_train", 150, 100),
        ("ade20k_panoptic_val", 150, 100),
        ("ade20k_instance_train", None, 100),
        ("ade20k_instance_val", None, 100),
        ("mapillary_vistas_sem_seg_train", 65, None),
        ("mapillary_vistas_panoptic_val", 65, None),
        # detectron2's own registrations that the reference configs use
        ("coco_2017_train", None, 80),
        ("ade20k_sem_seg_train", 150, None),
        ("ade20k_sem_seg_val", 150, None),
        ("cityscapes_fine_sem_seg_train", 19, None),
        ("cityscapes_fine_instance_seg_train", None, 8),
        ("cityscapes_fine_panoptic_train", 19, None),  # detectron2 lists all 19 as thing_classes
    ],
)
def test_class_counts(name, num_stuff, num_things):
    meta = MetadataCatalog.get(name)
    if num_stuff is not None:
        assert len(meta.stuff_classes) == num_stuff
        if hasattr(meta, "stuff_colors"):
            assert len(meta.stuff_colors) == num_stuff
    if num_things is not None:
        assert len(meta.thing_classes) == num_things
        if hasattr(meta, "thing_dataset_id_to_contiguous_id"):  # Cityscapes has none
            assert len(meta.thing_dataset_id_to_contiguous_id) == num_things


def test_panoptic_id_maps():
    panoptic = [("coco_2017_train_panoptic_with_sem_seg", 133), ("ade20k_panoptic_val", 150),
                ("mapillary_vistas_panoptic_train", 65)]
    for name, n in panoptic:
        meta = MetadataCatalog.get(name)
        stuff_map = meta.stuff_dataset_id_to_contiguous_id
        assert sorted(stuff_map.values()) == list(range(n))
        thing_map = meta.thing_dataset_id_to_contiguous_id
        # a thing's contiguous id is its position among all classes
        assert all(stuff_map[k] == v for k, v in thing_map.items())
        if name.startswith("mapillary"):  # published as is: every class listed as a thing class
            assert meta.thing_classes == meta.stuff_classes and len(thing_map) == 37
        else:
            assert [meta.stuff_classes[v] for v in thing_map.values()] == list(meta.thing_classes)
    assert len(MetadataCatalog.get("cityscapes_fine_panoptic_val").thing_dataset_id_to_contiguous_id) == 8
    coco = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert coco.thing_dataset_id_to_contiguous_id[1] == 0 and coco.thing_classes[0] == "person"
    assert coco.stuff_dataset_id_to_contiguous_id[200] == 132  # last COCO panoptic class
    assert coco.label_divisor == 1000 and coco.ignore_label == 255


def test_detectron2_names_stay_detectron2s():
    # Mask2Former's configs train on detectron2's own "coco_2017_train_panoptic" and
    # "ade20k_sem_seg_*": this package must leave their loaders and metadata as they are.
    for name in ("coco_2017_train_panoptic", "coco_2017_val_panoptic", "ade20k_sem_seg_train", "ade20k_sem_seg_val"):
        assert DatasetCatalog[name].__module__.startswith("detectron2."), name
    coco = MetadataCatalog.get("coco_2017_val_panoptic")
    assert coco.thing_classes == [c["name"] for c in COCO_CATEGORIES]  # detectron2 lists all 133
    assert len(coco.thing_dataset_id_to_contiguous_id) == 80 and len(coco.stuff_dataset_id_to_contiguous_id) == 53
    ade = MetadataCatalog.get("ade20k_sem_seg_val")
    assert ade.stuff_classes == ADE20K_SEM_SEG_CATEGORIES and not hasattr(ade, "stuff_colors")


@pytest.mark.parametrize("table", ["ade20k_150", "ade20k_full_847", "ade20k_instance_100", "coco_stuff_171",
                                   "mapillary_vistas_65"])
def test_metadata_tables_are_the_published_ones(table):
    with open(os.path.join(REFERENCE_DATASETS, f"{table}_categories.json")) as f:
        assert load_metadata_table(table) == json.load(f)


def test_metadata_tables():
    ade = load_metadata_table("ade20k_150")
    assert [c["name"] for c in ade] == list(ADE20K_SEM_SEG_CATEGORIES)
    assert sum(c["isthing"] for c in ade) == 100
    assert [(ade[i]["name"], ade[i]["isthing"]) for i in (17, 138)] == [("plant", 0), ("trash can", 1)]
    instance = load_metadata_table("ade20k_instance_100")
    assert [c["id"] for c in instance] == [c["id"] for c in ade if c["isthing"]]
    full = [c["name"] for c in load_metadata_table("ade20k_full_847")]
    assert len(full) == 847 == len(set(full))
    stuff = load_metadata_table("coco_stuff_171")
    assert len(stuff) == 171 and sum(c.get("isthing", 0) for c in stuff) == 80
    assert [c["id"] for c in stuff if c.get("isthing")] == [c["id"] for c in COCO_CATEGORIES if c["isthing"]]
    assert [c["id"] for c in stuff if not c.get("isthing")] == list(range(92, 183))
    assert len(load_metadata_table("mapillary_vistas_65")) == 65
    assert sum(c["isthing"] for c in load_metadata_table("mapillary_vistas_65")) == 37
    assert MetadataCatalog.get("ade20k_instance_val").thing_dataset_id_to_contiguous_id[7] == 0  # bed
    with pytest.raises(FileNotFoundError, match="no_such_table"):
        load_metadata_table("no_such_table")


def test_bad_metadata_table_names_the_file(tmp_path, monkeypatch):
    from mask2former.data.datasets import metadata_tables

    monkeypatch.setattr(metadata_tables, "METADATA_DIR", str(tmp_path))
    (tmp_path / "bad_color_categories.json").write_text('[{"id": 1, "name": "a", "color": [0, 0, 256]}]')
    (tmp_path / "same_id_categories.json").write_text('[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]')
    with pytest.raises(ValueError, match="bad_color_categories.json: entry 0 .'a'. has a bad color"):
        load_metadata_table("bad_color")
    with pytest.raises(ValueError, match="same_id_categories.json: duplicate category ids"):
        load_metadata_table("same_id")


def test_one_rule_from_thing_id_to_contiguous_id():
    from mask2former.data.datasets.builtin_meta import thing_dataset_id_to_contiguous_id
    from mask2former.data.synthetic import load_synthetic_categories, synthetic_metadata

    # a thing's contiguous id is its position among all classes of its table
    categories = [{"id": 5, "isthing": 0}, {"id": 9, "isthing": 1}, {"id": 2, "isthing": 1}]
    assert thing_dataset_id_to_contiguous_id(categories) == {9: 1, 2: 2}
    synthetic = synthetic_metadata()["thing_dataset_id_to_contiguous_id"]
    assert synthetic == thing_dataset_id_to_contiguous_id(load_synthetic_categories())
    ade = MetadataCatalog.get("ade20k_panoptic_val").thing_dataset_id_to_contiguous_id
    assert ade == thing_dataset_id_to_contiguous_id(load_metadata_table("ade20k_150"))


def test_check_num_classes():
    check_num_classes(["ade20k_sem_seg_train", "ade20k_sem_seg_val"], 150, "semantic")
    check_num_classes(["ade20k_instance_train"], 100, "instance")
    with pytest.raises(ValueError, match="coco_2017_val_panoptic_with_sem_seg.*133.*NUM_CLASSES=150"):
        check_num_classes(["coco_2017_val_panoptic_with_sem_seg"], 150, "panoptic")


@pytest.mark.parametrize(
    "train,test,num_classes,flags",
    [
        ("coco_2017_train_panoptic", "coco_2017_val_panoptic_with_sem_seg", 133, (True, True, True)),
        ("coco_2017_train", "coco_2017_val", 80, (False, True, False)),
        ("ade20k_instance_train", "ade20k_instance_val", 100, (False, True, False)),
        ("cityscapes_fine_instance_seg_train", "cityscapes_fine_instance_seg_val", 8, (False, True, False)),
        ("mapillary_vistas_sem_seg_train", "mapillary_vistas_sem_seg_val", 65, (True, False, False)),
    ],
)
def test_check_config_num_classes(train, test, num_classes, flags):
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    from mask2former.config import add_maskformer2_config
    from mask2former.data.datasets import check_config_num_classes

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train,), (test,)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    t = cfg.MODEL.MASK_FORMER.TEST
    t.SEMANTIC_ON, t.INSTANCE_ON, t.PANOPTIC_ON = flags
    check_config_num_classes(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes + 1
    with pytest.raises(ValueError, match=train):
        check_config_num_classes(cfg)


# ---------------------------------------------------------------- missing data


@pytest.mark.parametrize(
    "name,folder,script",
    [
        ("ade20k_full_sem_seg_val", "ADE20K_2021_17_01/images_detectron2/validation",
         "python -m datasets.prepare_ade20k_full_sem_seg"),
        ("ade20k_panoptic_val", "ADEChallengeData2016/images/validation", "python -m datasets.prepare_ade20k_pan_seg"),
        ("ade20k_instance_train", "ADEChallengeData2016/images/training", "python -m datasets.prepare_ade20k_ins_seg"),
        ("coco_2017_val_panoptic_with_sem_seg", "coco/val2017",
         "python -m datasets.prepare_coco_semantic_annos_from_panoptic_annos"),
        ("coco_2017_train_stuff_10k_sem_seg", "coco/coco_stuff_10k/images_detectron2/train",
         "python -m datasets.prepare_coco_stuff_10k_sem_seg"),
        ("mapillary_vistas_sem_seg_train", "mapillary_vistas/training/images", "README.md"),
    ],
)
def test_missing_dataset_error(tmp_path, name, folder, script):
    families = [register_all_ade20k_full, register_all_ade20k_panoptic, register_all_ade20k_instance,
                register_all_coco_panoptic_annos_sem_seg, register_all_coco_stuff_10k, register_all_mapillary_vistas]
    with registered_at(tmp_path, *families):
        with pytest.raises(FileNotFoundError) as e:
            DatasetCatalog.get(name)
    msg = str(e.value)
    assert os.path.join(str(tmp_path), folder) in msg and script in msg and "datasets/README.md" in msg


# ---------------------------------------------------------------- COCO semantic from panoptic


def _fake_coco_panoptic(root, split="val2017"):
    """Two 6x8 images: a person (id 1) on wall-other-merged (id 199), with void pixels."""
    pan_dir = root / "coco" / f"panoptic_{split}"
    pan_dir.mkdir(parents=True)
    (root / "coco" / "annotations").mkdir(parents=True)
    prep = _script("prepare_common")
    annotations, images = [], []
    for image_id in (139, 285):
        ids = np.zeros((6, 8), np.int64)
        ids[:, 4:] = 5000  # wall
        ids[1:3, 1:3] = 26 + image_id  # person (segment id differs per image)
        name = f"{image_id:012d}"
        Image.fromarray(prep.id2rgb(ids)).save(pan_dir / f"{name}.png")
        _save_jpg(str(root / "coco" / split / f"{name}.jpg"), 6, 8)
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": 6, "width": 8})
        annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": [
            {"id": 26 + image_id, "category_id": 1, "iscrowd": 0, "area": 4, "bbox": [1, 1, 2, 2]},
            {"id": 5000, "category_id": 199, "iscrowd": 0, "area": 24, "bbox": [4, 0, 4, 6]},
        ]})
    with open(root / "coco" / "annotations" / f"panoptic_{split}.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}, f)


def test_coco_semantic_from_panoptic(tmp_path):
    _fake_coco_panoptic(tmp_path)
    _script("prepare_coco_semantic_annos_from_panoptic_annos").main(
        ["--root", str(tmp_path), "--splits", "val2017", "--workers", "2"]
    )
    wall = [c["id"] for c in COCO_CATEGORIES].index(199)
    sem = np.asarray(Image.open(tmp_path / "coco" / "panoptic_semseg_val2017" / "000000000285.png"))
    expected = np.full((6, 8), 255, np.uint8)
    expected[:, 4:] = wall
    expected[1:3, 1:3] = 0  # person
    assert sem.dtype == np.uint8 and np.array_equal(sem, expected)

    with registered_at(tmp_path, register_all_coco_panoptic_annos_sem_seg):
        dicts = DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    # what detectron2's own "coco_2017_val_panoptic" loads from the same files
    plain = load_coco_panoptic_json(
        str(tmp_path / "coco" / "annotations" / "panoptic_val2017.json"), str(tmp_path / "coco" / "val2017"),
        str(tmp_path / "coco" / "panoptic_val2017"), MetadataCatalog.get("coco_2017_val_panoptic").as_dict(),
    )
    assert [d["image_id"] for d in dicts] == [139, 285]
    assert all(os.path.isfile(d["sem_seg_file_name"]) and os.path.isfile(d["file_name"]) for d in dicts)
    assert [(s["category_id"], s["isthing"]) for s in dicts[0]["segments_info"]] == [(0, True), (wall, False)]
    assert "sem_seg_file_name" not in plain[0] and plain[0]["segments_info"] == dicts[0]["segments_info"]
    # the training mapper of the COCO panoptic configs takes detectron2's dicts as they are
    mapper = MaskFormerPanopticDatasetMapper(augmentations=[], image_format="RGB", num_classes=133)
    out = mapper(plain[1])
    assert out["instances"].gt_classes.tolist() == [0, wall]
    assert out["sem_seg"][2, 2].item() == 0 and out["sem_seg"][0, 0].item() == 255


# ---------------------------------------------------------------- ADE20K


def _fake_ade(root, n=2, h=6, w=8):
    """ADEChallengeData2016 with semantic (raw 0..150) and instance annotations."""
    base = root / "ADEChallengeData2016"
    for split, dirname in [("train", "training"), ("val", "validation")]:
        for i in range(1, n + 1):
            stem = f"ADE_{split}_{i:08d}"
            _save_jpg(str(base / "images" / dirname / f"{stem}.jpg"), h, w)
            sem = np.zeros((h, w), np.uint8)
            sem[:, :4] = 1  # wall (stuff)
            sem[:3, 4:] = 8  # bed (thing, the first instance class)
            sem[3:, 4:] = 150  # flag (thing, the last instance class)
            (base / "annotations" / dirname).mkdir(parents=True, exist_ok=True)
            Image.fromarray(sem).save(base / "annotations" / dirname / f"{stem}.png")
            inst = np.zeros((h, w, 3), np.uint8)
            inst[:3, 4:] = [1, 1, 0]
            inst[3:, 4:6] = [100, 2, 0]
            inst[3:, 6:] = [100, 3, 0]
            (base / "annotations_instance" / dirname).mkdir(parents=True, exist_ok=True)
            Image.fromarray(inst).save(base / "annotations_instance" / dirname / f"{stem}.png")


def test_ade20k_semantic_prepare_and_load(tmp_path):
    _fake_ade(tmp_path)
    _script("prepare_ade20k_sem_seg").main(["--root", str(tmp_path), "--workers", "1"])
    out_dir = tmp_path / "ADEChallengeData2016" / "annotations_detectron2" / "training"
    out = np.asarray(Image.open(out_dir / "ADE_train_00000001.png"))
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[0, 7] == 7 and out[5, 7] == 149
    raw = np.array([[0, 1, 150]], np.uint8)
    assert _script("prepare_ade20k_sem_seg").shift_labels(raw).tolist() == [[255, 0, 149]]

    # "ade20k_sem_seg_train" is detectron2's registration: its loader, on the prepared folders
    image_dir = tmp_path / "ADEChallengeData2016" / "images" / "training"
    dicts = load_sem_seg(str(out_dir), str(image_dir), gt_ext="png", image_ext="jpg")
    assert len(dicts) == 2
    assert dicts[0]["file_name"].endswith("images/training/ADE_train_00000001.jpg")
    assert dicts[0]["sem_seg_file_name"].endswith("annotations_detectron2/training/ADE_train_00000001.png")


def test_ade20k_panoptic_and_instance_prepare_and_load(tmp_path):
    _fake_ade(tmp_path)
    root = ["--root", str(tmp_path), "--workers", "1"]
    _script("prepare_ade20k_sem_seg").main(root)
    _script("prepare_ade20k_pan_seg").main(root + INSTANCE_CATEGORY_FILES[:2])
    _script("prepare_ade20k_ins_seg").main(root + INSTANCE_CATEGORY_FILES)

    with registered_at(tmp_path, register_all_ade20k_panoptic, register_all_ade20k_instance):
        pan = DatasetCatalog.get("ade20k_panoptic_val")
        ins = DatasetCatalog.get("ade20k_instance_val")
    segs = sorted((s["category_id"], s["isthing"], s["area"]) for s in pan[0]["segments_info"])
    assert segs == [(0, False, 24), (7, True, 12), (149, True, 6), (149, True, 6)]
    assert pan[0]["image_id"] == 1 and pan[0]["height"] == 6 and os.path.isfile(pan[0]["sem_seg_file_name"])
    prep = _script("prepare_common")
    ids = prep.rgb2id(np.asarray(Image.open(pan[0]["pan_seg_file_name"])))
    assert {s["id"]: int((ids == s["id"]).sum()) for s in pan[0]["segments_info"]} == {
        s["id"]: s["area"] for s in pan[0]["segments_info"]
    }
    # instance model: contiguous ids over the 100 thing classes; same image ids as panoptic
    assert [d["image_id"] for d in ins] == [d["image_id"] for d in pan]
    assert sorted(a["category_id"] for a in ins[0]["annotations"]) == [0, 99, 99]
    with open(tmp_path / "ADEChallengeData2016" / "ade20k_instance_val.json") as f:
        categories = json.load(f)["categories"]
    # category ids of the json = ADE20K-150 indices of the instance classes, as the metadata expects
    thing_ids = MetadataCatalog.get("ade20k_instance_val").thing_dataset_id_to_contiguous_id
    assert {c["id"] for c in categories} == set(thing_ids)


def test_ade20k_instance_category_mapping_errors(tmp_path):
    prep = _script("prepare_ade20k_ins_seg")
    bad = tmp_path / "mapping.txt"
    bad.write_text("header\n1 8 165\n1 9 3055\n")
    with pytest.raises(ValueError, match="mapping.txt:3: instance class 1 maps to ADE20K-150 class 9"):
        prep.instance_class_map(str(bad))
    with pytest.raises(FileNotFoundError, match="no_such_mapping.txt"):
        prep.instance_class_map(str(tmp_path / "no_such_mapping.txt"))


def _fake_ade_full(tmp_path, classes_per_split):
    """Two 4x4 images per split: the split's first class on top, one of its others below left."""
    base = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE"
    for (split, prefix), classes in zip([("training", "ADE_train"), ("validation", "ADE_val")], classes_per_split):
        for i, extra in enumerate(classes[1:], start=1):
            folder = base / split / "scene"
            _save_jpg(str(folder / f"{prefix}_{i:08d}.jpg"), 4, 4)
            raw = np.zeros((4, 4), np.int64)
            raw[:2] = classes[0]
            raw[2:, :2] = extra
            seg = np.stack([raw // 256 * 10, raw % 256, np.zeros_like(raw)], -1).astype(np.uint8)
            Image.fromarray(seg).save(folder / f"{prefix}_{i:08d}_seg.png")


def test_ade20k_full_prepare_with_the_published_classes(tmp_path):
    table = load_metadata_table("ade20k_full_847")
    wall, building = table[0]["id"] + 1, table[1]["id"] + 1  # pixel value = ADE20K object id + 1
    absent = next(v for v in range(1, 4000) if v - 1 not in {c["id"] for c in table})
    _fake_ade_full(tmp_path, [(wall, building, absent), (wall, building, absent)])
    _script("prepare_ade20k_full_sem_seg").main(["--root", str(tmp_path), "--workers", "1"])
    with registered_at(tmp_path, register_all_ade20k_full):
        dicts = DatasetCatalog.get("ade20k_full_sem_seg_train")
    labels = [np.asarray(Image.open(d["sem_seg_file_name"])) for d in dicts]
    assert [(int(x[0, 0]), int(x[3, 0]), int(x[3, 3])) for x in labels] == [(0, 1, 65535), (0, 65535, 65535)]


def test_ade20k_full_prepare_classes_from_data_and_load(tmp_path):
    _fake_ade_full(tmp_path, [(300, 5, 7), (300, 5, 9)])
    _script("prepare_ade20k_full_sem_seg").main(["--root", str(tmp_path), "--workers", "1", "--classes-from-data"])
    with open(tmp_path / "ADE20K_2021_17_01" / "ade20k_full_categories.json") as f:
        cats = json.load(f)
    assert [(c["id"], c["raw_id"]) for c in cats] == [(0, 300), (1, 5)]  # in both splits, frequent first
    with registered_at(tmp_path, register_all_ade20k_full):
        dicts = DatasetCatalog.get("ade20k_full_sem_seg_train")
    label = np.asarray(Image.open(dicts[1]["sem_seg_file_name"]))
    assert label.dtype == np.uint16
    assert label[0, 0] == 0 and label[3, 0] == 65535 and label[3, 3] == 65535  # 7: train only


def test_coco_stuff_10k_prepare_and_load(tmp_path):
    from scipy.io import savemat

    base = tmp_path / "coco" / "coco_stuff_10k"
    (base / "annotations").mkdir(parents=True)
    (base / "imageLists").mkdir()
    for split, name in [("train", "COCO_train2014_000000000077"), ("test", "COCO_train2014_000000000078")]:
        _save_jpg(str(base / "images" / f"{name}.jpg"), 3, 4)
        labels = np.array([[0, 1, 12, 92], [182, 90, 91, 0], [1, 1, 1, 1]], np.uint16)
        savemat(base / "annotations" / f"{name}.mat", {"S": labels})
        (base / "imageLists" / f"{split}.txt").write_text(name + "\n")
    _script("prepare_coco_stuff_10k_sem_seg").main(["--root", str(tmp_path), "--workers", "1"])
    with registered_at(tmp_path, register_all_coco_stuff_10k):
        dicts = DatasetCatalog.get("coco_2017_test_stuff_10k_sem_seg")
    label = np.asarray(Image.open(dicts[0]["sem_seg_file_name"]))
    # 1 person -> 0, 12 (unused COCO id) -> 255, 92 banner -> 80, 182 wood -> 170, 90 toothbrush -> 79
    assert label[:2].tolist() == [[255, 0, 255, 80], [170, 79, 255, 255]]
