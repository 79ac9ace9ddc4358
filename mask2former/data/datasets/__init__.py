"""Built-in datasets: importing this package registers them (see builtin.py)."""
from . import builtin  # noqa: F401  (registers the datasets)
from . import (  # noqa: F401  (the original's module layout: mask2former.data.datasets.register_*)
    register_ade20k_full,
    register_ade20k_instance,
    register_ade20k_panoptic,
    register_coco_panoptic_annos_semseg,
    register_coco_stuff_10k,
    register_mapillary_vistas,
    register_mapillary_vistas_panoptic,
)
from .builtin import BUILTIN_DATASETS, register_all
from .catalog import datasets_root
from .checks import check_config_num_classes, check_num_classes, dataset_num_classes
from .custom import CUSTOM_TASKS, register_custom_dataset
from .metadata_tables import load_metadata_table

__all__ = [
    "BUILTIN_DATASETS",
    "register_all",
    "datasets_root",
    "check_config_num_classes",
    "check_num_classes",
    "dataset_num_classes",
    "load_metadata_table",
    "CUSTOM_TASKS",
    "register_custom_dataset",
]
