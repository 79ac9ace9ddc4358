"""Training machinery: a DefaultTrainer with safe checkpoints and a finite-loss stop."""

from .train_loop import FiniteLossCheck, NonFiniteLossError, check_losses_finite
from .trainer import ReliableTrainer

__all__ = ["FiniteLossCheck", "NonFiniteLossError", "ReliableTrainer", "check_losses_finite"]
