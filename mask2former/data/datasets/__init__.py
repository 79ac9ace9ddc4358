"""Built-in datasets: importing this package registers them (see builtin.py)."""
from . import builtin  # noqa: F401  (registers the datasets)
from .builtin import BUILTIN_DATASETS, register_all
from .checks import check_config_num_classes, check_num_classes, dataset_num_classes
from .metadata_tables import load_metadata_table

__all__ = [
    "BUILTIN_DATASETS",
    "register_all",
    "check_config_num_classes",
    "check_num_classes",
    "dataset_num_classes",
    "load_metadata_table",
]
