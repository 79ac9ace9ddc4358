"""
`import mask2former` registers the original implementation's 14 dataset names with exactly its
metadata (tests/reference/datasets/registered_metadata.json, dumped from the original), and
has its dataset-registration modules with the same public functions.
"""
import inspect
import json
import os

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

import mask2former  # noqa: F401  (registers the datasets)
import mask2former.data.datasets as datasets_pkg
from model_utils import REFERENCE_DATASETS

with open(os.path.join(REFERENCE_DATASETS, "registered_metadata.json")) as f:
    REGISTERED = json.load(f)

FIELDS = [(name, key) for name, fields in sorted(REGISTERED.items()) for key in sorted(fields)]


def _as_json(value):
    """JSON's view of a metadata value: dict keys become ints again, tuples lists."""
    if isinstance(value, dict):
        return {int(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    return value


def test_all_fourteen_names_registered():
    assert len(REGISTERED) == 14
    assert set(REGISTERED) <= set(DatasetCatalog.list())


@pytest.mark.parametrize("name,key", FIELDS, ids=[f"{n}.{k}" for n, k in FIELDS])
def test_registered_metadata_field(name, key):
    meta = MetadataCatalog.get(name)
    assert hasattr(meta, key), f"{name} has no metadata field {key!r}"
    assert _as_json(getattr(meta, key)) == _as_json(REGISTERED[name][key])


# module: the original's public functions of it, with their parameters
ORIGINAL_MODULES = {
    "register_ade20k_full": {"register_all_ade20k_full": ["root"]},
    "register_ade20k_instance": {"register_all_ade20k_instance": ["root"]},
    "register_ade20k_panoptic": {
        "get_metadata": [],
        "load_ade20k_panoptic_json": ["json_file", "image_dir", "gt_dir", "semseg_dir", "meta"],
        "register_ade20k_panoptic": [
            "name", "metadata", "image_root", "panoptic_root", "semantic_root", "panoptic_json", "instances_json"
        ],
        "register_all_ade20k_panoptic": ["root"],
    },
    "register_coco_panoptic_annos_semseg": {
        "get_metadata": [],
        "load_coco_panoptic_json": ["json_file", "image_dir", "gt_dir", "semseg_dir", "meta"],
        "register_coco_panoptic_annos_sem_seg": [
            "name", "metadata", "image_root", "panoptic_root", "panoptic_json", "sem_seg_root", "instances_json"
        ],
        "register_all_coco_panoptic_annos_sem_seg": ["root"],
    },
    "register_coco_stuff_10k": {"register_all_coco_stuff_10k": ["root"]},
    "register_mapillary_vistas": {"register_all_mapillary_vistas": ["root"]},
    "register_mapillary_vistas_panoptic": {
        "get_metadata": [],
        "load_mapillary_vistas_panoptic_json": ["json_file", "image_dir", "gt_dir", "semseg_dir", "meta"],
        "register_mapillary_vistas_panoptic": [
            "name", "metadata", "image_root", "panoptic_root", "semantic_root", "panoptic_json", "instances_json"
        ],
        "register_all_mapillary_vistas_panoptic": ["root"],
    },
}


@pytest.mark.parametrize("module_name", sorted(ORIGINAL_MODULES))
def test_original_registration_modules(module_name):
    module = getattr(datasets_pkg, module_name)
    assert inspect.ismodule(module)
    for function_name, params in ORIGINAL_MODULES[module_name].items():
        function = getattr(module, function_name)
        assert inspect.isfunction(function)
        assert list(inspect.signature(function).parameters) == params


@pytest.mark.parametrize(
    "module_name,name",
    [
        ("register_ade20k_panoptic", "ade20k_panoptic_val"),
        ("register_coco_panoptic_annos_semseg", "coco_2017_val_panoptic_with_sem_seg"),
        ("register_mapillary_vistas_panoptic", "mapillary_vistas_panoptic_val"),
    ],
)
def test_get_metadata_is_the_registered_metadata(module_name, name):
    metadata = getattr(datasets_pkg, module_name).get_metadata()
    assert {k: _as_json(v) for k, v in metadata.items()} == {
        k: _as_json(v) for k, v in REGISTERED[name].items() if k in metadata
    }
    assert set(REGISTERED[name]) - set(metadata) == {"ignore_label", "evaluator_type"}
