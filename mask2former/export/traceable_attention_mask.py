"""The transformer decoder's attention masks as float additive masks in exported graphs.

The model gives ``nn.MultiheadAttention`` a boolean (B*heads, Q, HW) mask, which the attention
turns into a float one (zeros, then -inf where True) at every layer: exported, a
``ConstantOfShape`` and a ``Where`` over all B*heads*Q*HW elements (13.4 M at 800x1333's finest
level), which took 0.12 s of each such layer's 0.2 s in onnxruntime (loaded machine). Made
float per image first and only then copied to every head, the same mask costs an eighth of
that, and the attention adds it as it is (same values: the attention's own conversion gives 0
and -inf alike).
"""
import contextlib
from typing import Iterator

import torch
from torch import Tensor

from ..modeling.transformer_decoder import mask2former_transformer_decoder as decoder_module


def additive_attention_mask(mask_logits: Tensor, num_heads: int) -> Tensor:
    """
    :func:`~mask2former.modeling.transformer_decoder.mask2former_transformer_decoder.attention_mask_from_logits`
    as a float mask: 0 where attended, -inf where not.

    Args:
        mask_logits: (B, Q, h, w) mask logits at the resolution of the attended features.
        num_heads: number of attention heads.
    Returns:
        (B*num_heads, Q, h*w) float, detached.
    """
    blocked = decoder_module.unmask_empty_queries((mask_logits.sigmoid().flatten(2) < 0.5).detach())
    additive = torch.zeros_like(blocked, dtype=mask_logits.dtype).masked_fill(blocked, float("-inf"))
    batch, num_queries, hw = additive.shape
    return additive.unsqueeze(1).expand(batch, num_heads, num_queries, hw).flatten(0, 1)


@contextlib.contextmanager
def additive_attention_masks() -> Iterator[None]:
    """The decoder builds :func:`additive_attention_mask` masks while the context lasts (for a
    trace: its module function is swapped, and restored after)."""
    original = decoder_module.attention_mask_from_logits
    decoder_module.attention_mask_from_logits = additive_attention_mask
    try:
        yield
    finally:
        decoder_module.attention_mask_from_logits = original
