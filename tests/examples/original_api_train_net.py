#!/usr/bin/env python
"""
A user's training script written against the ORIGINAL Mask2Former API (the kind of
``train_net.py`` that forks and tutorials carry): detectron2's DefaultTrainer with the original's
mappers, evaluators, solver set-up and TTA wrapper, imported from ``mask2former`` by their
original names. It uses nothing of this project beyond those names, and runs unchanged here;
``tests/api/test_original_api_scripts.py`` runs it on the synthetic dataset.

    python tests/examples/original_api_train_net.py --config-file CONFIG [--eval-only] [KEY VALUE ...]
"""
import copy
import itertools
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Set

import torch

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    verify_results,
)
from detectron2.projects.deeplab import add_deeplab_config, build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils.logger import setup_logger

from mask2former import (
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    InstanceSegEvaluator,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    SemanticSegmentorWithTTA,
    add_maskformer2_config,
)

PANOPTIC_TYPES = ["coco_panoptic_seg", "ade20k_panoptic_seg", "cityscapes_panoptic_seg", "mapillary_vistas_panoptic_seg"]


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        evaluators = []
        evaluator_type = MetadataCatalog.get(dataset_name).evaluator_type
        test = cfg.MODEL.MASK_FORMER.TEST
        if evaluator_type in ["sem_seg", "ade20k_panoptic_seg"]:
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
        if evaluator_type == "coco":
            evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder))
        if evaluator_type in PANOPTIC_TYPES and test.PANOPTIC_ON:
            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        if evaluator_type == "coco_panoptic_seg" and test.INSTANCE_ON:
            evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder))
        if evaluator_type == "coco_panoptic_seg" and test.SEMANTIC_ON:
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
        if evaluator_type in ["mapillary_vistas_panoptic_seg", "ade20k_panoptic_seg"] and test.INSTANCE_ON:
            evaluators.append(InstanceSegEvaluator(dataset_name, output_dir=output_folder))
        if not evaluators:
            raise NotImplementedError(f"no evaluator for {dataset_name} ({evaluator_type})")
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def build_train_loader(cls, cfg):
        mappers = {
            "mask_former_semantic": MaskFormerSemanticDatasetMapper,
            "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
            "mask_former_instance": MaskFormerInstanceDatasetMapper,
            "coco_instance_lsj": COCOInstanceNewBaselineDatasetMapper,
            "coco_panoptic_lsj": COCOPanopticNewBaselineDatasetMapper,
        }
        mapper_class = mappers.get(cfg.INPUT.DATASET_MAPPER_NAME)
        mapper = mapper_class(cfg, True) if mapper_class is not None else None
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_optimizer(cls, cfg, model):
        norm_types = (
            torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm,
            torch.nn.GroupNorm, torch.nn.InstanceNorm2d, torch.nn.LayerNorm, torch.nn.LocalResponseNorm,
        )
        defaults = {"lr": cfg.SOLVER.BASE_LR, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}
        params: List[Dict[str, Any]] = []
        seen: Set[torch.nn.parameter.Parameter] = set()
        for module_name, module in model.named_modules():
            for name, value in module.named_parameters(recurse=False):
                if not value.requires_grad or value in seen:
                    continue
                seen.add(value)
                hyperparams = copy.copy(defaults)
                if "backbone" in module_name:
                    hyperparams["lr"] = hyperparams["lr"] * cfg.SOLVER.BACKBONE_MULTIPLIER
                if "relative_position_bias_table" in name or "absolute_pos_embed" in name:
                    hyperparams["weight_decay"] = 0.0
                if isinstance(module, norm_types):
                    hyperparams["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_NORM
                if isinstance(module, torch.nn.Embedding):
                    hyperparams["weight_decay"] = cfg.SOLVER.WEIGHT_DECAY_EMBED
                params.append({"params": [value], **hyperparams})
        if cfg.SOLVER.OPTIMIZER == "SGD":
            optimizer = torch.optim.SGD(params, cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
        else:
            optimizer = torch.optim.AdamW(params, cfg.SOLVER.BASE_LR)
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if clip.ENABLED and clip.CLIP_TYPE == "full_model":
            clip_norm = clip.CLIP_VALUE

            class FullModelGradientClipping(type(optimizer)):
                def step(self, closure=None):
                    all_params = itertools.chain(*[g["params"] for g in self.param_groups])
                    torch.nn.utils.clip_grad_norm_(all_params, clip_norm)
                    super().step(closure=closure)

            optimizer.__class__ = FullModelGradientClipping
        else:
            optimizer = maybe_add_gradient_clipping(cfg, optimizer)
        return optimizer

    @classmethod
    def test_with_TTA(cls, cfg, model):
        logging.getLogger("detectron2.trainer").info("Running inference with test-time augmentation ...")
        model = SemanticSegmentorWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, model, evaluators)
        return OrderedDict({k + "_TTA": v for k, v in res.items()})


def setup(args):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask2former")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
