"""Chooses the training dataset mapper by name (cfg.INPUT.DATASET_MAPPER_NAME)."""

import logging
from typing import Any, Callable, Dict, Optional

from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader

from .dataset_mappers import (
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
from .dataset_mappers.common import is_report_count

__all__ = ["MAPPERS", "BAD_SAMPLE_ERRORS", "SkipBadSamples", "build_train_mapper", "build_test_loader"]

logger = logging.getLogger(__name__)

# cfg.INPUT.DATASET_MAPPER_NAME -> mapper class (each built with `cls(cfg, is_train=True)`)
MAPPERS: Dict[str, type] = {
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "mask_former_instance": MaskFormerInstanceDatasetMapper,
    "coco_instance_lsj": COCOInstanceNewBaselineDatasetMapper,
    "coco_panoptic_lsj": COCOPanopticNewBaselineDatasetMapper,
}

# What the mappers raise for one sample's bad files or annotations: unreadable or missing files
# (OSError), inconsistent content (ValueError), missing dataset dict fields (KeyError). Other
# exceptions are bugs and always propagate.
BAD_SAMPLE_ERRORS = (OSError, ValueError, KeyError)


class SkipBadSamples:
    """
    Wraps a training mapper so that a sample it rejects with one of :data:`BAD_SAMPLE_ERRORS`
    is skipped: the wrapper logs a warning naming the file and the reason (the 1st, 2nd, 4th,
    8th, ... time, and every time within a run of consecutive failures), counts it, and
    returns None, on which detectron2's ``MapDataset`` maps another, random sample instead.

    So many failures in a row that the data, not a few samples, must be broken
    (`max_consecutive_failures`) stop the run with a RuntimeError. detectron2's
    ``MapDataset`` gives up by itself on a dataset with fewer samples than that, all bad:
    after each one failed it has none left to try, and raises its own ValueError.

    Each data-loader worker holds its own copy, so counts are per worker.
    """

    def __init__(self, mapper: Callable[[dict], dict], max_consecutive_failures: int = 20):
        if max_consecutive_failures < 1:
            raise ValueError(
                f"max_consecutive_failures must be >= 1, got {max_consecutive_failures}"
            )
        self.mapper = mapper
        self.max_consecutive_failures = max_consecutive_failures
        self.num_skipped = 0
        self.consecutive_failures = 0

    def __call__(self, dataset_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        try:
            out = self.mapper(dataset_dict)
        except BAD_SAMPLE_ERRORS as e:
            self._skip(dataset_dict.get("file_name", "<no file_name>"), e)
            return None
        self.consecutive_failures = 0
        return out

    def _skip(self, file_name: str, error: Exception) -> None:
        self.num_skipped += 1
        self.consecutive_failures += 1
        reason = f"{type(error).__name__}: {error}"
        if self.consecutive_failures >= self.max_consecutive_failures:
            raise RuntimeError(
                f"DATALOADER.SKIP_BAD_SAMPLES: {self.consecutive_failures} training samples in a "
                f"row could not be used, the last one {file_name} ({reason}); the dataset looks "
                "broken as a whole rather than in a few samples"
            ) from error
        # every failure of a run of them is logged: each names one more file of broken data
        if is_report_count(self.num_skipped) or self.consecutive_failures > 1:
            logger.warning(
                "Skipped a bad training sample %s (%s); %d skipped so far "
                "(DATALOADER.SKIP_BAD_SAMPLES)",
                file_name,
                reason,
                self.num_skipped,
            )

    def __repr__(self) -> str:
        return f"SkipBadSamples({self.mapper!r})"


def build_train_mapper(cfg: CfgNode) -> Callable[[dict], Optional[dict]]:
    """
    The training mapper named by cfg.INPUT.DATASET_MAPPER_NAME, built from `cfg`; wrapped in
    :class:`SkipBadSamples` when cfg.DATALOADER.SKIP_BAD_SAMPLES is set.
    """
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MAPPERS:
        raise ValueError(
            f"Unknown cfg.INPUT.DATASET_MAPPER_NAME {name!r}; known mappers: {sorted(MAPPERS)}"
        )
    mapper = MAPPERS[name](cfg, is_train=True)
    if cfg.DATALOADER.get("SKIP_BAD_SAMPLES", False):
        return SkipBadSamples(mapper)
    return mapper


def build_test_loader(cfg: CfgNode, dataset_name: str, mapper: Callable[[dict], dict]):
    """
    detectron2's test loader of ``dataset_name`` (every image once, in order, split over the
    processes; cfg.DATALOADER.NUM_WORKERS workers) with cfg.TEST.IMS_PER_BATCH images per
    batch (1 when the config lacks the key).
    """
    batch_size = cfg.TEST.get("IMS_PER_BATCH", 1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"cfg.TEST.IMS_PER_BATCH must be a positive integer, got {batch_size!r}")
    return build_detection_test_loader(cfg, dataset_name, mapper=mapper, batch_size=batch_size)
