"""Optimizer and learning-rate scheduler builders of Mask2Former.

Differences from detectron2's defaults:
- the backbone trains with ``SOLVER.BACKBONE_MULTIPLIER`` times the base LR;
- normalization layers use ``SOLVER.WEIGHT_DECAY_NORM``, and embeddings (query features,
  query / level embeddings, Swin's position tables) use ``SOLVER.WEIGHT_DECAY_EMBED``;
- AdamW is available (``SOLVER.OPTIMIZER``), and gradients may be clipped by the norm of all
  parameters jointly (``SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model"``), as DETR does.
"""

import itertools
from typing import Any, Dict, List, Set, Type

import torch
from detectron2.config import CfgNode
from detectron2.layers import FrozenBatchNorm2d
from detectron2.projects.deeplab import build_lr_scheduler as _build_deeplab_lr_scheduler
from detectron2.solver import LRScheduler
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

__all__ = [
    "NORM_MODULE_TYPES",
    "EMBED_PARAM_NAMES",
    "get_maskformer_optimizer_params",
    "maybe_add_full_model_gradient_clipping",
    "build_optimizer",
    "build_lr_scheduler",
]


NORM_MODULE_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,  # detectron2's NaiveSyncBatchNorm subclasses BatchNorm2d
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
    FrozenBatchNorm2d,
)

# Parameters (by their own name, not the module's) that are embeddings, not weights.
EMBED_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")

_OPTIMIZERS = ("SGD", "ADAMW")


def get_maskformer_optimizer_params(
    model: torch.nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_embed: float,
    backbone_multiplier: float,
) -> List[Dict[str, Any]]:
    """
    Parameter groups for an optimizer, each parameter listed once.

    Args:
        model: the model; parameters with ``requires_grad=False`` are left out.
        base_lr: learning rate of all parameters outside the backbone.
        weight_decay: weight decay of ordinary weights.
        weight_decay_norm: weight decay of the parameters of normalization layers.
        weight_decay_embed: weight decay of ``nn.Embedding`` weights and of the parameters named
            in ``EMBED_PARAM_NAMES``.
        backbone_multiplier: LR multiplier of parameters in modules whose name contains
            "backbone".

    Returns:
        list of dicts with keys "params", "lr", "weight_decay"; parameters with equal
        hyper-parameters are merged into one group.
    """
    params: List[Dict[str, Any]] = []
    seen: Set[torch.nn.Parameter] = set()
    for module_name, module in model.named_modules():
        for param_name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in seen:
                continue
            # a parameter shared by several modules gets the hyper-parameters of the first
            seen.add(value)
            lr = base_lr
            wd = weight_decay
            if "backbone" in module_name:
                lr = lr * backbone_multiplier
            if isinstance(module, NORM_MODULE_TYPES):
                wd = weight_decay_norm
            if isinstance(module, torch.nn.Embedding) or param_name in EMBED_PARAM_NAMES:
                wd = weight_decay_embed
            params.append({"params": [value], "lr": lr, "weight_decay": wd})
    # fewer groups make the (foreach) optimizer step much faster; the order is deterministic,
    # so optimizer states saved in a checkpoint map back to the same parameters
    return reduce_param_groups(params)


def maybe_add_full_model_gradient_clipping(
    optimizer_cls: Type[torch.optim.Optimizer], cfg: CfgNode
) -> Type[torch.optim.Optimizer]:
    """
    Returns a subclass of ``optimizer_cls`` whose ``step`` first clips the gradient norm of all
    parameters together to ``SOLVER.CLIP_GRADIENTS.CLIP_VALUE`` (with ``NORM_TYPE``), when
    clipping is enabled with CLIP_TYPE "full_model"; otherwise ``optimizer_cls`` itself.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == "full_model" and clip.CLIP_VALUE > 0.0):
        return optimizer_cls
    max_norm = float(clip.CLIP_VALUE)
    norm_type = float(clip.NORM_TYPE)

    class FullModelGradientClippingOptimizer(optimizer_cls):
        def step(self, closure=None):
            all_params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(all_params, max_norm, norm_type)
            return super().step(closure=closure)

    FullModelGradientClippingOptimizer.__name__ = optimizer_cls.__name__ + "WithFullModelClip"
    return FullModelGradientClippingOptimizer


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """
    Build the optimizer of ``SOLVER.OPTIMIZER`` ("SGD" or "ADAMW") for ``model``, with the
    parameter groups of :func:`get_maskformer_optimizer_params` and optional gradient clipping.
    """
    params = get_maskformer_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        weight_decay_embed=cfg.SOLVER.WEIGHT_DECAY_EMBED,
        backbone_multiplier=cfg.SOLVER.BACKBONE_MULTIPLIER,
    )
    optimizer_type = cfg.SOLVER.OPTIMIZER
    if optimizer_type == "SGD":
        optimizer_cls = maybe_add_full_model_gradient_clipping(torch.optim.SGD, cfg)
        optimizer = optimizer_cls(params, cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
    elif optimizer_type == "ADAMW":
        optimizer_cls = maybe_add_full_model_gradient_clipping(torch.optim.AdamW, cfg)
        optimizer = optimizer_cls(params, cfg.SOLVER.BASE_LR)
    else:
        raise ValueError(
            f"SOLVER.OPTIMIZER={optimizer_type!r} is not supported; use one of {_OPTIMIZERS}"
        )
    if cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE != "full_model":
        # "value" / "norm": detectron2 clips each parameter on its own
        optimizer = maybe_add_gradient_clipping(cfg, optimizer)
    return optimizer


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """
    detectron2's LR schedulers (``SOLVER.LR_SCHEDULER_NAME``), plus DeepLab's "WarmupPolyLR".
    """
    return _build_deeplab_lr_scheduler(cfg, optimizer)
