#!/usr/bin/env python
"""
Video Mask2Former (YouTube-VIS) training and evaluation script.

Train:     python train_net_video.py --config-file CONFIG [--num-gpus N] [--resume] [KEY VALUE ...]
Evaluate:  python train_net_video.py --config-file CONFIG --eval-only MODEL.WEIGHTS model.pth

The flags and behaviour are ``train_net.py``'s (several processes, also on the CPU, resume from
the last complete atomic checkpoint, a stop at a non-finite loss, one-line config errors); only
the config keys, data and evaluator differ:

- the config also has the video keys (``add_maskformer2_video_config``);
- training clips come from ``YTVISDatasetMapper``, or from ``CocoClipDatasetMapper`` (pseudo
  clips of COCO instance images) when the first training dataset is a COCO one;
- evaluation is YouTube-VIS track AP/AR (``YTVISEvaluator``), which also writes the server's
  ``results.json`` to ``OUTPUT_DIR/inference``.
"""
import os

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator

import train_net
from mask2former.config import build_config
from mask2former_video import add_maskformer2_video_config
from mask2former_video.data_video import (
    CocoClipDatasetMapper,
    YTVISDatasetMapper,
    YTVISEvaluator,
)
from mask2former_video.data_video.build import (
    build_detection_test_loader,
    build_detection_train_loader,
)


def build_video_config(args):
    """``train_net.build_config`` with the video keys: (frozen config, warnings)."""
    return build_config(args, extra_keys=(add_maskformer2_video_config,))


def _is_coco_dataset(dataset_name: str) -> bool:
    # the original decides by the name ("coco*"); a dataset registered under another name
    # says it through its evaluator type
    evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    return dataset_name.startswith("coco") or evaluator_type == "coco"


class VideoTrainer(train_net.Trainer):
    """``train_net.Trainer`` with video clips and the YouTube-VIS evaluator."""

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: str = None
    ) -> DatasetEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return YTVISEvaluator(dataset_name, cfg, True, output_folder)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        if not cfg.DATASETS.TRAIN:
            raise ValueError("DATASETS.TRAIN is empty: no clips to train on")
        coco = _is_coco_dataset(cfg.DATASETS.TRAIN[0])
        mapper = (CocoClipDatasetMapper if coco else YTVISDatasetMapper)(cfg, is_train=True)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        # every frame of each video, read and checked by the mapper
        return build_detection_test_loader(
            cfg, dataset_name, mapper=YTVISDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model):
        raise ValueError(
            "TEST.AUG.ENABLED: test-time augmentation is not implemented for the video model"
        )


def setup(args) -> CfgNode:
    return train_net.setup(args, build_video_config)


def main(args):
    return train_net.main(args, VideoTrainer, build_video_config)


def cli(argv=None) -> None:
    train_net.cli(argv, main, build_video_config)


if __name__ == "__main__":
    cli()
