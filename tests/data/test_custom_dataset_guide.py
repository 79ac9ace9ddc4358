"""
register_custom_dataset (mask2former.data.datasets.custom) and the README's "Train on your own
data" guide, whose code blocks run here as written: the script and configs are written to a
folder holding a small synthetic dataset, then its commands train a tiny model for 3 iterations
and evaluate it, for each of the three tasks.
"""

import json
import math
import os
import re
import runpy
import shlex
import sys
from typing import Dict, List

import pytest

from detectron2.data import DatasetCatalog

from mask2former.data.datasets import register_custom_dataset
from mask2former.data.synthetic import ensure_synthetic_dataset, synthetic_metadata
from model_utils import REPO, tiny_opts

SECTION = "## Train on your own data"
TASKS = ("panoptic", "instance", "semantic")
# the metrics each task's evaluation reports, by evaluator
METRICS = {
    "panoptic": {"panoptic_seg": "PQ", "bbox": "AP", "segm": "AP", "sem_seg": "mIoU"},
    "instance": {"bbox": "AP", "segm": "AP"},
    "semantic": {"sem_seg": "mIoU"},
}


def _guide_blocks() -> List[tuple]:
    """(language, code) of every fenced code block of the guide's README section."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + len(SECTION))]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def _files_of_guide(blocks) -> Dict[str, str]:
    """path -> content of the python and yaml blocks, each named by its first line '# PATH'."""
    files = {}
    for lang, code in blocks:
        if lang in ("python", "yaml"):
            first = code.splitlines()[0]
            assert first.startswith(
                "# "
            ), f"a {lang} block of the guide does not start with '# PATH'"
            files[first[2:].strip()] = code
    return files


def _commands_of_guide(blocks) -> List[List[str]]:
    """The arguments of each ``python my_train.py ...`` command of the bash block."""
    (bash,) = [code for lang, code in blocks if lang == "bash"]
    commands = [
        shlex.split(line) for line in bash.replace("\\\n", " ").splitlines() if line.strip()
    ]
    for command in commands:
        assert command[0].endswith("python") and command[1] == "my_train.py", command
    return [command[2:] for command in commands]


@pytest.fixture(scope="module")
def guide_dir(tmp_path_factory):
    """A folder with the guide's files, the synthetic data its paths name and our configs."""
    folder = tmp_path_factory.mktemp("guide")
    ensure_synthetic_dataset(str(folder / "datasets"), num_train=4, num_val=2)
    (folder / "configs").mkdir()
    os.symlink(os.path.join(REPO, "configs", "synthetic"), folder / "configs" / "synthetic")
    for path, code in _files_of_guide(_guide_blocks()).items():
        (folder / path).write_text(code)
    return folder


def _fast_opts() -> List[str]:
    opts = tiny_opts()
    i = opts.index("MODEL.SEM_SEG_HEAD.NUM_CLASSES")
    del opts[i : i + 2]  # the guide's own class count is under test
    return opts + ["SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1"]


@pytest.mark.parametrize("task", TASKS)
def test_guide_trains_and_evaluates(task, guide_dir, monkeypatch, one_thread):
    # no capsys: train_net's loggers keep the sys.stdout they were set up with, for later tests
    monkeypatch.chdir(guide_dir)
    for args in _commands_of_guide(_guide_blocks()):
        # the guide's commands are written for the panoptic config; the others differ by name
        args = [a.replace("my_panoptic", f"my_{task}") for a in args]
        monkeypatch.setattr(sys, "argv", ["my_train.py", *args, *_fast_opts()])
        script = runpy.run_path("my_train.py", run_name="__main__")

    # the metadata the script registered has the class counts the configs set
    counts = [len(script[k].stuff_classes) for k in ("panoptic", "semantic")]
    assert counts + [len(script["instance"].thing_classes)] == [8, 8, 5]
    output = guide_dir / "output" / f"my_{task}"
    with open(output / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    # the last of the 3 iterations, then the evaluation that ends training
    trained, evaluated = records[-2], records[-1]
    assert trained["iteration"] == 2 and math.isfinite(trained["total_loss"])
    with open(output / "eval_results.json") as f:
        results = json.load(f)
    assert set(results) == set(METRICS[task])
    for evaluator, metric in METRICS[task].items():
        value = results[evaluator][metric]
        assert 0.0 <= value <= 100.0, (evaluator, results[evaluator])
        # --eval-only evaluated the weights training ended with
        assert evaluated[f"{evaluator}/{metric}"] == pytest.approx(value, abs=1e-6)


# ---------------------------------------------------------------- the helper itself
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("datasets"))
    return ensure_synthetic_dataset(folder, num_train=2, num_val=1)


def _panoptic(synthetic, name="_custom_test_panoptic", **kwargs):
    paths = dict(
        json_file=os.path.join(synthetic, "annotations", "panoptic_train.json"),
        panoptic_root=os.path.join(synthetic, "panoptic_train"),
        sem_seg_root=os.path.join(synthetic, "semantic_train"),
    )
    paths.update(kwargs)
    return register_custom_dataset(
        name, "panoptic", os.path.join(synthetic, "images", "train"), **paths
    )


def test_panoptic_metadata_is_the_synthetic_registration(synthetic):
    meta = _panoptic(synthetic)
    expected = synthetic_metadata()
    for key in (
        "thing_classes",
        "stuff_classes",
        "thing_dataset_id_to_contiguous_id",
        "stuff_dataset_id_to_contiguous_id",
    ):
        assert meta.get(key) == expected[key], key
    assert [tuple(c) for c in meta.stuff_colors] == expected["stuff_colors"]
    assert (meta.evaluator_type, meta.ignore_label, meta.label_divisor) == (
        "coco_panoptic_seg",
        255,
        1000,
    )
    dicts = DatasetCatalog.get("_custom_test_panoptic")
    assert len(dicts) == 2 and all(os.path.isfile(d["sem_seg_file_name"]) for d in dicts)


def test_panoptic_categories_are_ordered_things_first(synthetic, tmp_path):
    # stuff listed before things and ids unsorted in the json: contiguous ids still put
    # the things first, by id, so that COCO's mask-AP evaluator sees thing ids 0..T-1
    with open(os.path.join(synthetic, "annotations", "panoptic_train.json")) as f:
        data = json.load(f)
    data["categories"] = sorted(data["categories"], key=lambda c: (c["isthing"], -c["id"]))
    json_file = tmp_path / "panoptic.json"
    json_file.write_text(json.dumps(data))
    meta = _panoptic(synthetic, name="_custom_test_reordered", json_file=str(json_file))
    assert (
        meta.stuff_dataset_id_to_contiguous_id
        == synthetic_metadata()["stuff_dataset_id_to_contiguous_id"]
    )


def test_instance_and_semantic_metadata(synthetic):
    images = os.path.join(synthetic, "images", "val")
    instance = register_custom_dataset(
        "_custom_test_instance",
        "instance",
        images,
        json_file=os.path.join(synthetic, "annotations", "instances_val.json"),
    )
    assert instance.thing_classes == synthetic_metadata()["thing_classes"]
    assert instance.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 4: 2, 7: 3, 9: 4}
    assert instance.evaluator_type == "coco" and len(instance.thing_colors) == 5
    categories = {
        obj["category_id"]
        for d in DatasetCatalog.get("_custom_test_instance")
        for obj in d["annotations"]
    }
    assert categories <= set(range(5))

    semantic = register_custom_dataset(
        "_custom_test_semantic",
        "semantic",
        images,
        sem_seg_root=os.path.join(synthetic, "semantic_val"),
        class_names=["a", "b"],
        ignore_label=7,
    )
    assert (semantic.stuff_classes, semantic.ignore_label, semantic.evaluator_type) == (
        ["a", "b"],
        7,
        "sem_seg",
    )
    (d,) = DatasetCatalog.get("_custom_test_semantic")
    assert d["sem_seg_file_name"].endswith("000001.png") and d["file_name"].endswith("000001.jpg")


def test_errors_name_the_argument_or_file(synthetic, tmp_path):
    images = os.path.join(synthetic, "images", "train")
    with pytest.raises(ValueError, match="task must be one of"):
        register_custom_dataset("_custom_bad", "detection", images)
    with pytest.raises(ValueError, match="panoptic_root is required"):
        _panoptic(synthetic, panoptic_root=None)
    with pytest.raises(FileNotFoundError, match="sem_seg_root .*missing_dir"):
        _panoptic(synthetic, sem_seg_root=str(tmp_path / "missing_dir"))
    with pytest.raises(FileNotFoundError, match="image_root"):
        register_custom_dataset(
            "_custom_bad", "instance", str(tmp_path / "no_images"), json_file="x.json"
        )
    with pytest.raises(ValueError, match="needs class_names"):
        register_custom_dataset("_custom_bad", "semantic", images, sem_seg_root=images)
    with pytest.raises(ValueError, match="not class_names"):
        _panoptic(synthetic, class_names=["a"])

    no_categories = tmp_path / "no_categories.json"
    no_categories.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match=f"{no_categories}: no 'categories'"):
        register_custom_dataset("_custom_bad", "instance", images, json_file=str(no_categories))
    no_isthing = tmp_path / "no_isthing.json"
    no_isthing.write_text(json.dumps({"annotations": [], "categories": [{"id": 1, "name": "cat"}]}))
    with pytest.raises(
        ValueError, match=r"no_isthing.json: category .*'cat'.* lacks the keys \['isthing'\]"
    ):
        _panoptic(synthetic, json_file=str(no_isthing))
    repeated = tmp_path / "repeated.json"
    repeated.write_text(
        json.dumps({"categories": [{"id": 3, "name": "a"}, {"id": 3, "name": "b"}]})
    )
    with pytest.raises(ValueError, match=r"repeated.json: category .*'b'.* repeats the id"):
        register_custom_dataset("_custom_bad", "instance", images, json_file=str(repeated))
