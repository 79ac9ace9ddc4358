"""
Activation checkpointing of a backbone's blocks (``MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING``):
each block keeps only its input for backward and recomputes its activations there, so that the
backbone holds one block's activations at a time during backward instead of all of them.

Parameter names do not change (the blocks stay where they are; only their container's class
does), so checkpoints load as before. Blocks with batch-norm layers that update their running
statistics are left alone: recomputing them would update the statistics twice.
"""
import logging

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..transformer_decoder.layers import run_layer

logger = logging.getLogger(__name__)

__all__ = ["CheckpointedSequential", "checkpoint_backbone_blocks"]


class CheckpointedSequential(nn.Sequential):
    """An ``nn.Sequential`` whose modules each run through activation checkpointing when autograd
    is on (:func:`~mask2former.modeling.transformer_decoder.layers.run_layer`)."""

    def forward(self, x):
        for module in self:
            x = run_layer(module, x, checkpointed=True)
        return x


def _updates_running_stats(module: nn.Module) -> bool:
    return any(
        isinstance(m, _BatchNorm) and m.track_running_stats for m in module.modules()
    )


def checkpoint_backbone_blocks(backbone: nn.Module) -> bool:
    """
    Turns on activation checkpointing of ``backbone``'s blocks, in place: the stages of
    detectron2's ``ResNet`` (``backbone.stages``, ``nn.Sequential`` of blocks) and the layers of
    our Swin Transformer (its own ``use_checkpoint``). Returns whether it did; a backbone of
    another kind, or one with trainable batch norm, is left as it is, with a log line saying so.
    """
    if hasattr(backbone, "layers") and all(hasattr(l, "use_checkpoint") for l in backbone.layers):
        for layer in backbone.layers:
            layer.use_checkpoint = True
        return True
    stages = getattr(backbone, "stages", None)
    if not stages or not all(type(s) is nn.Sequential for s in stages):
        logger.info("activation checkpointing: %s has no known blocks; its activations are kept", type(backbone).__name__)
        return False
    if any(_updates_running_stats(s) for s in stages):
        logger.info(
            "activation checkpointing: %s has batch norm that updates its running statistics "
            "(MODEL.RESNETS.NORM); its activations are kept", type(backbone).__name__,
        )
        return False
    for stage in stages:
        stage.__class__ = CheckpointedSequential
    return True
