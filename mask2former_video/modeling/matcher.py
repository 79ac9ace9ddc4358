"""
The video matcher: the image :class:`~mask2former.modeling.matcher.HungarianMatcher`, whose
mask costs take mask tubes (Q, T, H, W) against (N, T, H', W') -- one set of random points per
video, shared by its T frames, each tube compared as T*P values.
"""
from mask2former.modeling.matcher import HungarianMatcher, batch_dice_loss, batch_sigmoid_ce_loss

__all__ = ["VideoHungarianMatcher", "batch_dice_loss", "batch_sigmoid_ce_loss"]


class VideoHungarianMatcher(HungarianMatcher):
    """
    Hungarian matching of predicted mask tubes to target tubes.

    ``forward(outputs, targets)``: outputs {"pred_logits": (B, Q, K+1), "pred_masks":
    (B, Q, T, H, W)}, targets B dicts {"labels": (N_b,), "masks": (N_b, T, H', W')}; returns B
    tuples (query indices, target indices). The constructor arguments are the image matcher's.
    """
