"""Training machinery: a DefaultTrainer with safe checkpoints and a finite-loss stop."""

from .train_loop import NonFiniteLossError, check_losses_finite
from .trainer import ReliableTrainer

__all__ = ["NonFiniteLossError", "ReliableTrainer", "check_losses_finite"]
