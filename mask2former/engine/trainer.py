"""detectron2's DefaultTrainer with atomic checkpoints, checked loading and a finite-loss stop."""

import logging
import weakref
from typing import Any, Dict

import torch

from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import Mask2FormerCheckpointer
from .train_loop import FiniteLossAMPTrainer, FiniteLossSimpleTrainer

__all__ = ["ReliableTrainer"]


def _ddp_kwargs(model: torch.nn.Module) -> Dict[str, Any]:
    # detectron2 passes device_ids=[local rank], which DDP rejects for a CPU model
    on_cpu = next(model.parameters()).device.type == "cpu"
    return {"broadcast_buffers": False, **({"device_ids": None} if on_cpu else {})}


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
    - distributed training also runs on CPU processes (gloo).
    """

    def __init__(self, cfg: CfgNode):
        # DefaultTrainer.__init__, step for step, with our training loop, DDP arguments and
        # checkpointer (the hooks built at the end must get the checkpointer that saves)
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)

        model = create_ddp_model(model, **_ddp_kwargs(model))
        loop = FiniteLossAMPTrainer if cfg.SOLVER.AMP.ENABLED else FiniteLossSimpleTrainer
        self._trainer = loop(model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = Mask2FormerCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

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

    def after_train(self):
        # TrainerBase.train sets iter to max_iter only when every iteration succeeded: after a
        # failure, hooks running in after_train must not replace a good checkpoint
        if self.iter < self.max_iter:
            self.checkpointer.disable_saving(
                f"training stopped by an error at iteration {self.iter}"
            )
        super().after_train()
