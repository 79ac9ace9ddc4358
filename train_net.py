#!/usr/bin/env python
"""
Mask2Former training and evaluation script.

Train:     python train_net.py --config-file CONFIG [--num-gpus N] [--resume] [KEY VALUE ...]
Evaluate:  python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model.pth
On a machine without a GPU add ``MODEL.DEVICE cpu`` (the script also falls back to the CPU,
with a warning, when CUDA is not available).

Distributed: ``--num-gpus N`` starts N processes on this machine, one per GPU (NCCL). With
``MODEL.DEVICE cpu`` (or without CUDA) it starts N CPU processes that train together with the
gloo backend (SyncBN is then detectron2's all-reduce ``naiveSyncBN``). SOLVER.IMS_PER_BATCH is the total batch over all
processes. On several machines, run the same command on each, with its own --machine-rank
and the address of machine 0, e.g. for 2 machines with 8 GPUs each:

    # machine 0 (reachable as 10.0.0.1)
    python train_net.py --config-file CONFIG --num-gpus 8 --num-machines 2 \
        --machine-rank 0 --dist-url tcp://10.0.0.1:29500
    # machine 1
    python train_net.py --config-file CONFIG --num-gpus 8 --num-machines 2 \
        --machine-rank 1 --dist-url tcp://10.0.0.1:29500

Resume: checkpoints (every SOLVER.CHECKPOINT_PERIOD iterations and at the end) are written
atomically to OUTPUT_DIR; after an interruption, re-run the same command with ``--resume`` to
continue from the last complete one (iteration, weights, optimizer and LR schedule).
A NaN or infinite loss stops training on every process with the iteration and losses named;
no checkpoint is written after it.
"""

import json
import logging
import os
import sys
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import torch

import detectron2.utils.comm as comm
from detectron2.config import CfgNode
from detectron2.data import build_detection_train_loader
from detectron2.engine import default_argument_parser, default_setup, hooks, launch
from detectron2.evaluation import DatasetEvaluator, verify_results
from detectron2.solver import LRScheduler
from detectron2.utils.logger import setup_logger

import mask2former  # noqa: F401  (registers backbones, heads, meta-architectures, datasets)
from mask2former.checkpoint import (
    CheckpointMismatchError,
    CheckpointReadError,
    Mask2FormerCheckpointer,
    load_model_weights,
)
from mask2former.config import build_config
from mask2former.data.build import build_test_loader, build_train_mapper
from mask2former.data.dataset_mappers import MaskFormerTestDatasetMapper
from mask2former.engine import NonFiniteLossError, ReliableTrainer
from mask2former.evaluation import build_evaluator
from mask2former.solver import build_lr_scheduler, build_optimizer
from mask2former.test_time_augmentation import SemanticSegmentorWithTTA
from mask2former.utils.config_merge import ConfigError
from mask2former.utils.cpu_allocator import keep_freed_memory_on_cpu


class Trainer(ReliableTrainer):
    """
    detectron2's DefaultTrainer with Mask2Former's data, solver and evaluators, atomic
    checkpoints and a stop on non-finite losses (see :class:`ReliableTrainer`).
    """

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
    ) -> DatasetEvaluator:
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        # the mapper is chosen by INPUT.DATASET_MAPPER_NAME
        return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        # images read and checked like the training mappers do; TEST.IMS_PER_BATCH per batch
        return build_test_loader(cfg, dataset_name, mapper=MaskFormerTestDatasetMapper(cfg))

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer) -> LRScheduler:
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model: torch.nn.Module) -> Dict[str, Any]:
        """Evaluate semantic segmentation with multi-scale / flip test-time augmentation."""
        if not cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON:
            raise ValueError(
                "TEST.AUG.ENABLED: test-time augmentation averages semantic predictions; "
                "it needs MODEL.MASK_FORMER.TEST.SEMANTIC_ON True"
            )
        logger = logging.getLogger("mask2former")
        logger.info("Running inference with test-time augmentation ...")
        model = SemanticSegmentorWithTTA(cfg, model)
        # the TTA model only outputs "sem_seg": evaluate that alone
        eval_cfg = cfg.clone()
        eval_cfg.defrost()
        eval_cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
        eval_cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
        evaluators = [
            cls.build_evaluator(
                eval_cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
            )
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, model, evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in res.items())


ConfigBuilder = Callable[[Any], Tuple[CfgNode, List[str]]]


def setup(args, config_builder: ConfigBuilder = build_config) -> CfgNode:
    """Create the config and set up logging, the output directory and the random seed."""
    cfg, notes = config_builder(args)
    default_setup(cfg, args)
    logger = setup_logger(
        output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask2former"
    )
    for note in notes:
        logger.warning(note)
    return cfg


def _save_results(results: Dict[str, Any], path: str) -> None:
    """Write the metrics (``{task: {metric: value}}``) of an evaluation as json."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    logging.getLogger("mask2former").info("Evaluation results saved to %s", path)


def _load_eval_weights(cfg: CfgNode, model: torch.nn.Module, resume: bool) -> None:
    """The last checkpoint of OUTPUT_DIR if ``resume``, else MODEL.WEIGHTS; keys must match."""
    checkpointer = Mask2FormerCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    path = checkpointer.get_checkpoint_file() if resume and checkpointer.has_checkpoint() else ""
    path = path or cfg.MODEL.WEIGHTS
    if not path:
        logging.getLogger("mask2former").warning(
            "MODEL.WEIGHTS is empty: evaluating randomly initialised weights"
        )
        return
    load_model_weights(model, path)


def main(
    args, trainer_class: Type[Trainer] = Trainer, config_builder: ConfigBuilder = build_config
):
    """Train, or evaluate with ``--eval-only``; ``train_net_video.py`` passes its own trainer
    class and config."""
    cfg = setup(args, config_builder)
    keep_freed_memory_on_cpu(cfg.MODEL.DEVICE)

    if args.eval_only:
        model = trainer_class.build_model(cfg)
        _load_eval_weights(cfg, model, resume=args.resume)
        res = trainer_class.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(trainer_class.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
            _save_results(res, os.path.join(cfg.OUTPUT_DIR, "eval_results.json"))
        return res

    trainer = trainer_class(cfg)
    trainer.resume_or_load(resume=args.resume)
    if cfg.TEST.AUG.ENABLED:
        trainer.register_hooks(
            [hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))]
        )
    return trainer.train()


def cli(
    argv=None, main_func: Callable = main, config_builder: ConfigBuilder = build_config
) -> None:
    """The command line: ``main_func(args)`` in each of the processes it launches."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        # fail here, in one process and with one line, rather than in every launched worker
        cfg, _ = config_builder(args)
    except ConfigError as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")
    if args.num_gpus * args.num_machines > 1 and not cfg.MODEL.DEVICE.startswith("cuda"):
        # detectron2's launch uses NCCL whenever a GPU is visible; CPU workers need gloo
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        launch(
            main_func,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (
        CheckpointMismatchError,
        CheckpointReadError,
        FileNotFoundError,
        NonFiniteLossError,
    ) as e:
        # bad input or a diverged run, explained in the message: no traceback needed
        # (a launched worker's error reaches here as the worker's traceback instead)
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")


if __name__ == "__main__":
    cli()
