"""
Data loaders for video datasets, with detectron2's signatures: the dataset dicts are videos
(see ``load_ytvis_json``) and the default mapper is :class:`YTVISDatasetMapper`.
"""
import itertools
import logging
from typing import Any, Dict, List, Optional, Sequence, Union

from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetCatalog
from detectron2.data import build as d2_build
from detectron2.data.samplers import InferenceSampler, TrainingSampler

from .dataset_mapper import YTVISDatasetMapper

__all__ = [
    "build_detection_train_loader",
    "build_detection_test_loader",
    "get_detection_dataset_dicts",
    "filter_images_with_only_crowd_annotations",
]

logger = logging.getLogger(__name__)


def filter_images_with_only_crowd_annotations(dataset_dicts: List[Dict], dataset_names: Sequence[str]) -> List[Dict]:
    """
    Keeps the videos that have at least one non-crowd object in some frame (the name is
    detectron2's, for images).
    """
    def has_objects(video: Dict) -> bool:
        return any(not obj.get("iscrowd", 0) for frame in video["annotations"] for obj in frame)

    kept = [v for v in dataset_dicts if has_objects(v)]
    logger.info(
        f"Removed {len(dataset_dicts) - len(kept)} videos with no usable annotations. "
        f"{len(kept)} videos left in {list(dataset_names)}."
    )
    return kept


def get_detection_dataset_dicts(
    names: Union[str, Sequence[str]], filter_empty: bool = True, proposal_files: Optional[Sequence[str]] = None
) -> List[Dict]:
    """
    The video dicts of the registered datasets `names`, concatenated.

    Args:
        filter_empty: drop videos without any non-crowd annotation (when annotated).
        proposal_files: not supported for videos; must be None or empty.
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("get_detection_dataset_dicts: no dataset names given (DATASETS.TRAIN / DATASETS.TEST)")
    if proposal_files:
        raise ValueError(f"proposal_files {list(proposal_files)}: precomputed proposals are not supported for videos")
    per_dataset = [DatasetCatalog.get(name) for name in names]
    for name, dicts in zip(names, per_dataset):
        if not dicts:
            raise ValueError(f"Dataset {name!r} is empty")
    dataset_dicts = list(itertools.chain.from_iterable(per_dataset))
    if filter_empty and "annotations" in dataset_dicts[0]:
        dataset_dicts = filter_images_with_only_crowd_annotations(dataset_dicts, names)
    if not dataset_dicts:
        raise ValueError(f"No valid videos left in {list(names)}")
    return dataset_dicts


def _train_loader_from_config(cfg: CfgNode, mapper=None, *, dataset=None, sampler=None) -> Dict[str, Any]:
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
    if mapper is None:
        mapper = YTVISDatasetMapper(cfg, True)
    if sampler is None:
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise ValueError(
                f"DATALOADER.SAMPLER_TRAIN = {cfg.DATALOADER.SAMPLER_TRAIN!r}: only "
                "'TrainingSampler' is supported for videos"
            )
        sampler = TrainingSampler(len(dataset))
    return {
        "dataset": dataset,
        "sampler": sampler,
        "mapper": mapper,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
    }


@configurable(from_config=_train_loader_from_config)
def build_detection_train_loader(
    dataset, *, mapper, sampler=None, total_batch_size, aspect_ratio_grouping=True, num_workers=0, collate_fn=None
):
    """detectron2's ``build_detection_train_loader``; from a config, of DATASETS.TRAIN's videos."""
    return d2_build.build_detection_train_loader(
        dataset, mapper=mapper, sampler=sampler, total_batch_size=total_batch_size,
        aspect_ratio_grouping=aspect_ratio_grouping, num_workers=num_workers, collate_fn=collate_fn,
    )


def _test_loader_from_config(cfg: CfgNode, dataset_name, mapper=None) -> Dict[str, Any]:
    dataset = get_detection_dataset_dicts(dataset_name, filter_empty=False)
    if mapper is None:
        mapper = YTVISDatasetMapper(cfg, False)
    return {
        "dataset": dataset,
        "mapper": mapper,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "sampler": InferenceSampler(len(dataset)),
    }


@configurable(from_config=_test_loader_from_config)
def build_detection_test_loader(dataset, *, mapper, sampler=None, batch_size=1, num_workers=0, collate_fn=None):
    """detectron2's ``build_detection_test_loader``; from a config, of one dataset's videos."""
    return d2_build.build_detection_test_loader(
        dataset, mapper=mapper, sampler=sampler, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn
    )
