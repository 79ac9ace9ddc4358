"""
detectron2's training loops, stopped on every process by a non-finite loss.

detectron2's ``SimpleTrainer.write_metrics`` raises ``FloatingPointError`` on the main process
only: in distributed training the other processes go on to the next iteration and wait in
DDP's gradient all-reduce until the process group times out. Here every process learns whether
any process saw a non-finite loss, and all of them raise the same error, before the optimizer
step, so the weights stay those of the last finite iteration.
"""

import math
from typing import Dict, List, Mapping, Optional

import torch
import torch.distributed as dist

from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm

__all__ = [
    "NonFiniteLossError",
    "check_losses_finite",
    "FiniteLossSimpleTrainer",
    "FiniteLossAMPTrainer",
]


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


class _FiniteLossCheckMixin:
    """Checks the losses where detectron2 writes them: after backward, before the step."""

    def _write_metrics(
        self,
        loss_dict: Mapping[str, torch.Tensor],
        data_time: float,
        prefix: str = "",
        iter: Optional[int] = None,
    ) -> None:
        check_losses_finite(loss_dict, self.iter if iter is None else iter)
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class FiniteLossSimpleTrainer(_FiniteLossCheckMixin, SimpleTrainer):
    """:class:`SimpleTrainer` that stops every process on a non-finite loss."""


class FiniteLossAMPTrainer(_FiniteLossCheckMixin, AMPTrainer):
    """:class:`AMPTrainer` that stops every process on a non-finite loss."""
