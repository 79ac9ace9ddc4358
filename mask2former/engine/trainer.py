"""detectron2's DefaultTrainer with atomic checkpoints, checked loading and a finite-loss stop."""

import logging
import weakref
from typing import List

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import (
    DefaultTrainer,
    HookBase,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
)
from detectron2.utils import comm

from ..checkpoint import Mask2FormerCheckpointer
from .train_loop import FiniteLossCheck

__all__ = ["ReliableTrainer"]


def _on_cpu_processes(cfg: CfgNode) -> bool:
    return comm.get_world_size() > 1 and not cfg.MODEL.DEVICE.startswith("cuda")


class ReliableTrainer(DefaultTrainer):
    """
    :class:`DefaultTrainer` whose

    - checkpoints (periodic, final, ``last_checkpoint``) are written atomically by
      :class:`Mask2FormerCheckpointer`, so a killed run resumes from its last complete one;
    - ``resume_or_load`` removes a killed run's temporary files, resumes with every key checked
      ("exact") and starts from ``MODEL.WEIGHTS`` with the "init" rule
      (see :mod:`mask2former.checkpoint`);
    - training stops on every process at the first non-finite loss (before the optimizer step),
      and no checkpoint is written after a failed iteration, not even ``model_final``;
    - distributed training also runs on CPU processes (gloo);
    - the gradients are freed before each forward, not after it (less peak memory).

    It is built by ``DefaultTrainer.__init__``, whose checkpointer is replaced by ours before
    the hooks that save are built (:meth:`build_hooks`); its training loop gets a
    :class:`FiniteLossCheck` hook.
    """

    # The last iteration's gradients are freed before the forward instead of after it, so that
    # they are not held through it (a model's size in memory; the same gradients). A class
    # attribute, so that benchmarks/training.py can run the step as this trainer does.
    ZERO_GRAD_BEFORE_FORWARD = True

    def __init__(self, cfg: CfgNode):
        if _on_cpu_processes(cfg):
            self._init_on_cpu_processes(cfg)
        else:
            super().__init__(cfg)
        # on the loop: DefaultTrainer's own hooks are not called between backward and step
        self.loss_check = FiniteLossCheck()
        self._trainer.register_hooks([self.loss_check])
        self._trainer.zero_grad_before_forward = self.ZERO_GRAD_BEFORE_FORWARD

    def _init_on_cpu_processes(self, cfg: CfgNode) -> None:
        # DefaultTrainer.__init__ wraps the model with create_ddp_model(model,
        # broadcast_buffers=False), which adds device_ids=[local rank], and torch's DDP rejects
        # any device_ids for a CPU model: no argument or method of DefaultTrainer changes that.
        # So, on CPU processes only, its construction with device_ids=None (AMP needs CUDA).
        TrainerBase.__init__(self)
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=None)
        self._trainer = SimpleTrainer(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self) -> List[HookBase]:
        """DefaultTrainer's hooks, saving through a :class:`Mask2FormerCheckpointer`."""
        # called by DefaultTrainer.__init__ right after it made a plain DetectionCheckpointer
        plain = self.checkpointer
        self.checkpointer = Mask2FormerCheckpointer(
            plain.model, plain.save_dir, save_to_disk=plain.save_to_disk, **plain.checkpointables
        )
        return super().build_hooks()

    def resume_or_load(self, resume: bool = True) -> None:
        """
        Resume from ``OUTPUT_DIR/last_checkpoint`` (model, optimizer, scheduler, iteration) if
        ``resume`` and it exists, else load ``MODEL.WEIGHTS`` (weights only) and start at 0.
        """
        if comm.is_main_process():
            self.checkpointer.remove_stale_temp_files()
        comm.synchronize()  # no process reads OUTPUT_DIR while the main one cleans it
        if resume and self.checkpointer.has_checkpoint():
            path = self.checkpointer.get_checkpoint_file()
            self.checkpointer.load(path, match="exact")
            # the checkpoint holds the iteration that had finished
            self.start_iter = self.iter + 1
            logging.getLogger(__name__).info(
                "Resumed from %s: training continues at iteration %d", path, self.start_iter
            )
        else:
            self.checkpointer.load(self.cfg.MODEL.WEIGHTS, checkpointables=[], match="init")

    def before_train(self):
        super().before_train()
        # after every hook's before_train, so that the losses are read after any forward hook
        # that another hook put on the model to change them
        self.loss_check.watch(self.model)

    def after_train(self):
        self.loss_check.unwatch()
        # TrainerBase.train sets iter to max_iter only when every iteration succeeded: after a
        # failure, hooks running in after_train must not replace a good checkpoint
        if self.iter < self.max_iter:
            self.checkpointer.disable_saving(
                f"training stopped by an error at iteration {self.iter}"
            )
        super().after_train()
