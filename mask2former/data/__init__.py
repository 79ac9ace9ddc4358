"""Data path: dataset registration, synthetic dataset, training mappers."""
from . import datasets  # noqa: F401  (registers the built-in and synthetic datasets)
from .build import MAPPERS, build_train_mapper
from .dataset_mappers import *  # noqa: F401,F403
