"""
Video inference of the video Mask2Former: the top (query, class) pairs of a clip and their mask
tubes at the output size, and, for long videos, the linking of queries across windows.

Whole clip (the original's computation): the clip's class probabilities and mask logits come
from one decoder pass; :class:`WindowTracks` with one window holds them as they are.

Windows (``MODEL.MASK_FORMER.TEST.WINDOW_SIZE``): each window of frames goes through the model
alone. The queries of a window are linked to those of the previous window by Hungarian matching
of the cosine similarity of their decoder embeddings (as MinVIS does), so that query i of every
window continues the same track. A track's class probabilities are averaged over the windows.
Per window only the decoder's low-resolution mask logits (stride 4) are kept, in float16 on the
CPU: Q * H * W / 8 bytes per frame, about the size of the bool output itself (10 * H * W bytes
per frame) for Q = 100. The backbone and pixel-decoder features, which make the whole-clip
memory grow with the video's length, exist for one window at a time.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["WindowTracks", "link_queries", "top_pairs", "masks_at_output_size"]

# Frames resized at once when the kept masks are brought to the output size: the full-size float
# logits of only this many frames exist at a time.
FRAMES_PER_RESIZE = 8


def link_queries(previous: Tensor, current: Tensor) -> Tensor:
    """
    Args:
        previous: (Q, C) query embeddings of the previous window, in track order.
        current: (Q, C) query embeddings of the current window.
    Returns:
        (Q,) int64: ``current[order[i]]`` continues track i (the assignment maximising the total
        cosine similarity).
    """
    similarity = F.normalize(previous.float(), dim=-1) @ F.normalize(current.float(), dim=-1).T
    rows, cols = linear_sum_assignment(similarity.cpu().numpy(), maximize=True)
    order = torch.empty(previous.shape[0], dtype=torch.int64)
    order[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.int64)
    return order


class WindowTracks:
    """
    The predictions of a video's windows, queries linked across windows (see the module doc).
    """

    def __init__(self, compact: bool):
        """
        Args:
            compact: keep mask logits in float16 on the CPU (several windows); otherwise as
                they are (one window: the result is the whole-clip inference exactly).
        """
        self.compact = compact
        self.mask_logits: List[Tensor] = []  # per window (Q, t, h, w)
        self._prob_sum: Optional[Tensor] = None
        self._last_embeds: Optional[Tensor] = None

    def add(self, class_logits: Tensor, mask_logits: Tensor, embeds: Tensor) -> None:
        """
        Args:
            class_logits: (Q, K+1) class logits of the window (last: "no object").
            mask_logits: (Q, t, h, w) mask logits of the window's t frames.
            embeds: (Q, C) query embeddings of the window.
        """
        probs = F.softmax(class_logits, dim=-1)[:, :-1]
        if self._last_embeds is not None:
            order = link_queries(self._last_embeds, embeds).to(embeds.device)
            probs, mask_logits, embeds = probs[order], mask_logits[order], embeds[order]
        self._prob_sum = probs if self._prob_sum is None else self._prob_sum + probs
        self._last_embeds = embeds
        if self.compact:
            mask_logits = mask_logits.to("cpu", torch.float16)
        self.mask_logits.append(mask_logits)

    def scores(self) -> Tensor:
        """(Q, K) class probabilities of the tracks, averaged over the windows."""
        if self._prob_sum is None:
            raise ValueError("WindowTracks: no window was added")
        return self._prob_sum / len(self.mask_logits)


def top_pairs(scores: Tensor, k: int) -> Tuple[Tensor, Tensor, Tensor]:
    """
    The k best (query, class) pairs; a query may appear with several classes.

    Args:
        scores: (Q, K) class probabilities.
        k: pairs to keep (at most Q * K).
    Returns:
        scores (k,), labels (k,) and query indices (k,), by decreasing score.
    """
    num_classes = scores.shape[1]
    top_scores, index = scores.flatten().topk(min(k, scores.numel()), sorted=True)
    return top_scores, index % num_classes, index // num_classes


def masks_at_output_size(
    window_mask_logits: Sequence[Tensor],
    queries: Tensor,
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
) -> Tensor:
    """
    Binary mask tubes of some queries at the output size, as the original: logits resized
    bilinearly to the padded input size, cropped to the image, resized bilinearly to the output
    size, > 0. Frames are resized a few at a time (the result is the same: each frame is
    resized alone).

    Args:
        window_mask_logits: per window (Q, t, h, w) mask logits.
        queries: (R,) query indices.
        padded_size: (H_pad, W_pad) of the batched frames.
        image_size: (H, W) of the frames before padding.
        output_size: (height, width) of the output.
    Returns:
        (R, T, height, width) bool on the CPU.
    """
    num_frames = sum(m.shape[1] for m in window_mask_logits)
    out = torch.zeros((len(queries), num_frames, *output_size), dtype=torch.bool)
    start = 0
    for logits in window_mask_logits:
        selected = logits[queries.to(logits.device)]
        for first in range(0, selected.shape[1], FRAMES_PER_RESIZE):
            chunk = selected[:, first : first + FRAMES_PER_RESIZE].float()
            chunk = F.interpolate(chunk, size=padded_size, mode="bilinear", align_corners=False)
            chunk = chunk[:, :, : image_size[0], : image_size[1]]
            chunk = F.interpolate(chunk, size=output_size, mode="bilinear", align_corners=False)
            out[:, start + first : start + first + chunk.shape[1]] = (chunk > 0).cpu()
        start += selected.shape[1]
    return out
