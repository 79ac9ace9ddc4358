"""
A hook for detectron2's training loops that stops every process at a non-finite loss.

detectron2's ``SimpleTrainer.write_metrics`` raises ``FloatingPointError`` on the main process
only: in distributed training the other processes go on to the next iteration and wait in
DDP's gradient all-reduce until the process group times out. Here every process learns whether
any process saw a non-finite loss, and all of them raise the same error, before the optimizer
step, so the weights stay those of the last finite iteration.
"""

import math
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["NonFiniteLossError", "check_losses_finite", "FiniteLossCheck"]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the iteration and every loss."""


def _format_losses(losses: Dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.6g}" for k, v in sorted(losses.items()))


def check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """
    Raise :class:`NonFiniteLossError` on every process if any process has a non-finite loss.
    A collective call in distributed training: all processes must call it at each iteration.

    Args:
        loss_dict: this process's scalar losses.
        iteration: the current iteration, for the message.
    """
    values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
    bad = (~torch.isfinite(values)).any().to(torch.float32).reshape(1)
    world_size = comm.get_world_size()
    if world_size > 1:
        # one small all-reduce per iteration; the loss values are only gathered on failure
        dist.all_reduce(bad)
    if bad.item() == 0:
        return
    local = {k: float(v) for k, v in zip(loss_dict.keys(), values.tolist())}
    per_rank: List[Dict[str, float]] = comm.all_gather(local) if world_size > 1 else [local]
    lines = [
        (f"rank {rank}: " if world_size > 1 else "") + _format_losses(losses)
        for rank, losses in enumerate(per_rank)
        if not all(math.isfinite(v) for v in losses.values())
    ]
    raise NonFiniteLossError(
        f"Loss became infinite or NaN at iteration {iteration}; training stopped before the "
        f"optimizer step and no checkpoint is written after it. Losses: " + "; ".join(lines)
    )


class FiniteLossCheck(HookBase):
    """
    Stops every process at the first non-finite loss, after the backward pass and before the
    optimizer step (``after_backward``), with :class:`NonFiniteLossError`.

    Register it on the training loop whose ``run_step`` calls ``after_backward``
    (:class:`SimpleTrainer`, :class:`AMPTrainer`), and :meth:`watch` the model when training
    starts, after every other hook's ``before_train``: the losses are read from the model's
    output by a forward hook, which must come after any forward hook that changes them.
    """

    def __init__(self):
        self._losses: Optional[Mapping[str, torch.Tensor]] = None
        self._handle: Optional[RemovableHandle] = None

    def watch(self, model: nn.Module) -> None:
        """Read the losses of ``model``'s training forward passes from now on."""
        self.unwatch()
        self._handle = model.register_forward_hook(self._record)

    def unwatch(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, module: nn.Module, inputs: Any, output: Any) -> None:
        # in eval mode the model returns predictions, not losses
        if module.training:
            self._losses = output if isinstance(output, Mapping) else {"total_loss": output}

    def after_backward(self) -> None:
        losses, self._losses = self._losses, None
        if losses is not None:
            check_losses_finite(losses, self.trainer.iter)
