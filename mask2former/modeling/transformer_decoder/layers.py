"""
Sequence-first building blocks of the Mask2Former decoder: self-attention, cross-attention and
feed-forward layers with a residual connection and LayerNorm (post-norm by default, pre-norm
with ``normalize_before=True``), and a small MLP.

All sequences are (L, B, C): length first, as ``nn.MultiheadAttention`` expects by default.
"""
from typing import Callable, Optional

from torch import Tensor, nn
from torch.nn import functional as F


def get_activation_fn(activation: str) -> Callable[[Tensor], Tensor]:
    """Activation function by name ("relu", "gelu" or "glu")."""
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    if activation == "glu":
        return F.glu
    raise ValueError(f"activation should be relu, gelu or glu, not {activation!r}")


def with_pos_embed(tensor: Tensor, pos: Optional[Tensor]) -> Tensor:
    """``tensor + pos``, or ``tensor`` when there is no positional embedding."""
    return tensor if pos is None else tensor + pos


def xavier_init_(module: nn.Module) -> None:
    """xavier_uniform_ on every parameter with more than one dimension (weights, not biases)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Multi-head self-attention among the queries, with residual and LayerNorm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        # unused: kept so that every layer type has the same constructor signature
        self.activation = get_activation_fn(activation)
        self.normalize_before = normalize_before
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        xavier_init_(self)

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
        if self.normalize_before:
            tgt2 = self.norm(tgt)
            q = k = with_pos_embed(tgt2, query_pos)
            tgt2 = self.self_attn(
                q, k, value=tgt2, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask
            )[0]
            return tgt + self.dropout(tgt2)
        q = k = with_pos_embed(tgt, query_pos)
        tgt2 = self.self_attn(
            q, k, value=tgt, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask
        )[0]
        return self.norm(tgt + self.dropout(tgt2))


class CrossAttentionLayer(nn.Module):
    """Multi-head attention from the queries to image features (memory), with residual and LayerNorm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        # unused: kept so that every layer type has the same constructor signature
        self.activation = get_activation_fn(activation)
        self.normalize_before = normalize_before
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        xavier_init_(self)

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
            memory_mask: (B*nhead, Q, HW) or (Q, HW) bool, True = query does not attend there.
            memory_key_padding_mask: (B, HW) bool, True = padded pixel.
            pos: (HW, B, C) positional embedding of the memory (added to keys only).
            query_pos: (Q, B, C) positional embedding of the queries.
        Returns:
            (Q, B, C)
        """
        query = self.norm(tgt) if self.normalize_before else tgt
        tgt2 = self.multihead_attn(
            query=with_pos_embed(query, query_pos),
            key=with_pos_embed(memory, pos),
            value=memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )[0]
        if self.normalize_before:
            return tgt + self.dropout(tgt2)
        return self.norm(tgt + self.dropout(tgt2))


class FFNLayer(nn.Module):
    """Position-wise feed-forward network (Linear-act-Linear), with residual and LayerNorm."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.activation = get_activation_fn(activation)
        self.normalize_before = normalize_before
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        xavier_init_(self)

    def forward(self, tgt: Tensor) -> Tensor:
        """(L, B, C) -> (L, B, C)"""
        if self.normalize_before:
            tgt2 = self.norm(tgt)
            tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt2))))
            return tgt + self.dropout(tgt2)
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm(tgt + self.dropout(tgt2))


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
