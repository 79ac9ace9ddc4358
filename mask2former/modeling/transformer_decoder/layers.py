"""
The transformer layers of both decoders, sequence first: (L, B, C), as ``nn.MultiheadAttention``
expects by default.

Every layer is a chain of residual sub-layers (self-attention, cross-attention, feed-forward),
each wrapped by :func:`residual` as post-norm ``norm(x + dropout(f(x)))`` or, with
``normalize_before``, pre-norm ``x + dropout(f(norm(x)))``. The layers differ only in which
sub-layers they chain and in the names of their modules, which the published checkpoints fix
(``norm`` in Mask2Former's one-sub-layer layers, ``norm1..3`` in MaskFormer's DETR layers).
"""
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


def with_pos_embed(tensor: Tensor, pos: Optional[Tensor]) -> Tensor:
    """``tensor + pos``, or ``tensor`` when there is no positional embedding."""
    return tensor if pos is None else tensor + pos


def run_layer(layer: Callable[..., Tensor], *args, checkpointed: bool = False) -> Tensor:
    """
    ``layer(*args)``. With ``checkpointed`` and autograd on, through activation checkpointing
    (``MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING``): the layer's intermediate tensors are not
    kept for backward but recomputed there, with the same random state, so that gradients are
    the same while the memory of one layer's activations is held at a time, for one more
    forward pass of the layer.
    """
    if checkpointed and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False, preserve_rng_state=True)
    return layer(*args)


def xavier_init_(module: nn.Module) -> None:
    """xavier_uniform_ on every parameter with more than one dimension (weights, not biases)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def residual(
    x: Tensor,
    sublayer: Callable[[Tensor], Tensor],
    norm: nn.Module,
    dropout: nn.Module,
    normalize_before: bool,
) -> Tensor:
    """One residual sub-layer: pre-norm ``x + dropout(sublayer(norm(x)))`` or post-norm
    ``norm(x + dropout(sublayer(x)))``. (L, B, C) -> (L, B, C)."""
    if normalize_before:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


def self_attention(
    attn: nn.MultiheadAttention,
    x: Tensor,
    pos: Optional[Tensor],
    attn_mask: Optional[Tensor],
    key_padding_mask: Optional[Tensor],
) -> Tensor:
    """Self-attention of x (L, B, C); ``pos`` (L, B, C) is added to queries and keys, not values."""
    q = k = with_pos_embed(x, pos)
    return attn(q, k, value=x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0]


def cross_attention(
    attn: nn.MultiheadAttention,
    x: Tensor,
    memory: Tensor,
    pos: Optional[Tensor],
    query_pos: Optional[Tensor],
    attn_mask: Optional[Tensor],
    key_padding_mask: Optional[Tensor],
) -> Tensor:
    """Attention from x (Q, B, C) to memory (HW, B, C); ``pos`` is the memory's embedding (keys
    only), ``query_pos`` the queries'. A 4-D ``attn_mask`` is additive and broadcast over the
    heads (:func:`attention_with_head_broadcast_mask`)."""
    if attn_mask is not None and attn_mask.dim() == 4:
        if key_padding_mask is not None:
            raise ValueError(
                "a head-broadcast (B, 1, Q, HW) attention mask cannot be combined with a key padding "
                "mask: pass the padding in the mask, or a (B*nhead, Q, HW) mask"
            )
        return attention_with_head_broadcast_mask(
            attn, with_pos_embed(x, query_pos), with_pos_embed(memory, pos), memory, attn_mask)
    return attn(
        query=with_pos_embed(x, query_pos),
        key=with_pos_embed(memory, pos),
        value=memory,
        attn_mask=attn_mask,
        key_padding_mask=key_padding_mask,
    )[0]


def attention_with_head_broadcast_mask(
    attn: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor
) -> Tensor:
    """
    ``attn(query, key, value, attn_mask=...)[0]`` (no dropout) for an additive float mask of one
    row per image, broadcast over the heads, which ``nn.MultiheadAttention`` does not take: its
    3-D masks have a row per (image, head), which an exported graph materialises.

    Args:
        query: (L, B, E); key, value: (S, B, E).
        attn_mask: (B, 1, L, S) float, added to every head's scores.
    Returns:
        (L, B, E)
    """
    length, batch, embed = query.shape
    heads = attn.num_heads
    head_dim = embed // heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)

    def split_heads(x: Tensor) -> Tensor:  # (T, B, E) -> (B, heads, T, head_dim)
        return x.reshape(x.shape[0], batch, heads, head_dim).permute(1, 2, 0, 3)

    q = split_heads(F.linear(query, w_q, b_q)) * head_dim ** -0.5
    k = split_heads(F.linear(key, w_k, b_k))
    v = split_heads(F.linear(value, w_v, b_v))
    weights = torch.softmax(attn_mask + q @ k.transpose(-2, -1), dim=-1)  # (B, heads, L, S)
    out = (weights @ v).permute(2, 0, 1, 3).reshape(length, batch, embed)
    return attn.out_proj(out)


def feed_forward(linear1: nn.Linear, dropout: nn.Module, linear2: nn.Linear, x: Tensor) -> Tensor:
    """Linear-ReLU-dropout-Linear: (L, B, C) -> (L, B, C)."""
    return linear2(dropout(F.relu(linear1(x))))


def _finish_sublayer(layer: nn.Module, d_model: int, dropout: float, normalize_before: bool) -> None:
    """Gives a one-sub-layer layer its residual ``norm`` and ``dropout``, then
    xavier-initialises its weights."""
    layer.norm = nn.LayerNorm(d_model)
    layer.dropout = nn.Dropout(dropout)
    layer.normalize_before = normalize_before
    xavier_init_(layer)


class SelfAttentionLayer(nn.Module):
    """Multi-head self-attention among the queries, as one residual sub-layer."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        _finish_sublayer(self, d_model, dropout, normalize_before)

    def forward(
        self,
        tgt: Tensor,
        tgt_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            tgt: (Q, B, C) queries.
            tgt_mask: (Q, Q) or (B*nhead, Q, Q) attention mask (bool: True = not attended).
            tgt_key_padding_mask: (B, Q) bool, True = padded query.
            query_pos: (Q, B, C) positional embedding added to queries and keys (not values).
        Returns:
            (Q, B, C)
        """
        return residual(
            tgt,
            lambda x: self_attention(self.self_attn, x, query_pos, tgt_mask, tgt_key_padding_mask),
            self.norm, self.dropout, self.normalize_before,
        )


class CrossAttentionLayer(nn.Module):
    """Multi-head attention from the queries to image features (memory), as one residual sub-layer."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        _finish_sublayer(self, d_model, dropout, normalize_before)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            tgt: (Q, B, C) queries.
            memory: (HW, B, C) flattened image features.
            memory_mask: (B*nhead, Q, HW) or (Q, HW) bool, True = query does not attend there,
                or (B, 1, Q, HW) additive floats, the same for every head.
            memory_key_padding_mask: (B, HW) bool, True = padded pixel.
            pos: (HW, B, C) positional embedding of the memory (added to keys only).
            query_pos: (Q, B, C) positional embedding of the queries.
        Returns:
            (Q, B, C)
        """
        return residual(
            tgt,
            lambda x: cross_attention(
                self.multihead_attn, x, memory, pos, query_pos, memory_mask, memory_key_padding_mask
            ),
            self.norm, self.dropout, self.normalize_before,
        )


class FFNLayer(nn.Module):
    """Position-wise feed-forward network, as one residual sub-layer."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        # one dropout inside the FFN and on its output, as in the reference
        _finish_sublayer(self, d_model, dropout, normalize_before)

    def forward(self, tgt: Tensor) -> Tensor:
        """(L, B, C) -> (L, B, C)"""
        return residual(
            tgt,
            lambda x: feed_forward(self.linear1, self.dropout, self.linear2, x),
            self.norm, self.dropout, self.normalize_before,
        )


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (not after the last): (..., in) -> (..., out)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got num_layers={num_layers}")
        self.num_layers = num_layers
        in_dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        out_dims = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(in_dims, out_dims))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


def aux_outputs(
    outputs_class: Optional[List[Tensor]], outputs_seg_masks: List[Tensor]
) -> List[Dict[str, Tensor]]:
    """
    Per-prediction dicts for the deep-supervision losses: every prediction but the last.

    Args:
        outputs_class: per prediction (B, Q, K+1) logits, or None without mask classification.
        outputs_seg_masks: per prediction (B, Q, H, W) mask logits.
    """
    if outputs_class is None:
        return [{"pred_masks": b} for b in outputs_seg_masks[:-1]]
    return [{"pred_logits": a, "pred_masks": b} for a, b in zip(outputs_class[:-1], outputs_seg_masks[:-1])]
