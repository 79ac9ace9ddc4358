"""
The video criterion: the image :class:`~mask2former.modeling.criterion.SetCriterion`, whose
mask losses split each matched tube (T, H, W) into T frame masks, each importance-sampled, and
sum over them (divided by the number of target instances, not by T).
"""
from mask2former.modeling.criterion import (
    SetCriterion,
    calculate_uncertainty,
    dice_loss,
    sigmoid_ce_loss,
)

__all__ = ["VideoSetCriterion", "calculate_uncertainty", "dice_loss", "sigmoid_ce_loss"]


class VideoSetCriterion(SetCriterion):
    """
    Hungarian-matched losses of mask tubes.

    ``forward(outputs, targets)``: outputs "pred_logits" (B, Q, K+1), "pred_masks"
    (B, Q, T, H, W) and optionally "aux_outputs"; targets B dicts {"labels": (N_b,), "masks":
    (N_b, T, H', W')}. The constructor arguments are the image criterion's; use it with a
    :class:`~mask2former_video.modeling.matcher.VideoHungarianMatcher`.
    """
