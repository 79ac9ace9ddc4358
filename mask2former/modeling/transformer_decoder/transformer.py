"""
The DETR encoder-decoder transformer used by MaskFormer's ``StandardTransformerDecoder``:
a stack of self-attention encoder layers over the flattened image features, and a stack of
decoder layers (self-attention, cross-attention to the encoder output, FFN) over the queries.
Sequences are (L, B, C).
"""
import copy
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .layers import cross_attention, feed_forward, residual, self_attention, xavier_init_


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def _encoder(
    d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float, normalize_before: bool
) -> "TransformerEncoder":
    layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
    # with pre-norm, the residual stream is never normalized inside the layers
    norm = nn.LayerNorm(d_model) if normalize_before else None
    return TransformerEncoder(layer, num_layers, norm)


def _flatten_feature_map(
    src: Tensor, mask: Optional[Tensor], pos_embed: Tensor
) -> Tuple[Tensor, Optional[Tensor], Tensor]:
    """(B, C, H, W) src and pos_embed -> (HW, B, C); (B, H, W) mask -> (B, HW)."""
    src = src.flatten(2).permute(2, 0, 1)
    pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
    if mask is not None:
        mask = mask.flatten(1)
    return src, mask, pos_embed


def _unflatten_feature_map(memory: Tensor, shape: torch.Size) -> Tensor:
    """(HW, B, C) -> (B, C, H, W) of the given shape."""
    return memory.permute(1, 2, 0).reshape(shape)


class Transformer(nn.Module):
    """DETR's encoder-decoder transformer over one feature map."""

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        normalize_before: bool = False,
        return_intermediate_dec: bool = False,
    ):
        super().__init__()
        self.encoder = _encoder(
            d_model, nhead, num_encoder_layers, dim_feedforward, dropout, normalize_before
        )
        decoder_layer = TransformerDecoderLayer(
            d_model, nhead, dim_feedforward, dropout, normalize_before
        )
        self.decoder = TransformerDecoder(
            decoder_layer,
            num_decoder_layers,
            nn.LayerNorm(d_model),
            return_intermediate=return_intermediate_dec,
        )
        self.d_model = d_model
        self.nhead = nhead
        xavier_init_(self)

    def forward(
        self, src: Tensor, mask: Optional[Tensor], query_embed: Tensor, pos_embed: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """
        Args:
            src: (B, C, H, W) image features.
            mask: (B, H, W) bool, True at padded pixels, or None.
            query_embed: (Q, C) learnable query positional embeddings.
            pos_embed: (B, C, H, W) positional encoding of src.
        Returns:
            hs: (L, B, Q, C) decoder outputs (L = num_decoder_layers with intermediate outputs,
                else 1), each through the decoder's final norm.
            memory: (B, C, H, W) encoder output.
        """
        shape = src.shape
        src, mask, pos_embed = _flatten_feature_map(src, mask, pos_embed)
        query_embed = query_embed.unsqueeze(1).repeat(1, shape[0], 1)  # (Q, B, C)

        # queries start empty: their identity is only in the positional embedding
        tgt = torch.zeros_like(query_embed)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        hs = self.decoder(
            tgt, memory, memory_key_padding_mask=mask, pos=pos_embed, query_pos=query_embed
        )
        return hs.transpose(1, 2), _unflatten_feature_map(memory, shape)


class TransformerEncoderOnly(nn.Module):
    """The encoder half of :class:`Transformer`: self-attention layers over one feature map
    (MaskFormer's ``TransformerEncoderPixelDecoder`` runs it on the coarsest level)."""

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.encoder = _encoder(
            d_model, nhead, num_encoder_layers, dim_feedforward, dropout, normalize_before
        )
        self.d_model = d_model
        self.nhead = nhead
        xavier_init_(self)

    def forward(self, src: Tensor, mask: Optional[Tensor], pos_embed: Tensor) -> Tensor:
        """
        Args:
            src: (B, C, H, W) image features.
            mask: (B, H, W) bool, True at padded pixels, or None.
            pos_embed: (B, C, H, W) positional encoding of src.
        Returns:
            (B, C, H, W) encoder output.
        """
        shape = src.shape
        src, mask, pos_embed = _flatten_feature_map(src, mask, pos_embed)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        return _unflatten_feature_map(memory, shape)


class TransformerEncoder(nn.Module):
    def __init__(self, encoder_layer: nn.Module, num_layers: int, norm: Optional[nn.Module] = None):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        src: Tensor,
        mask: Optional[Tensor] = None,
        src_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
    ) -> Tensor:
        """(HW, B, C) -> (HW, B, C)"""
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, src_key_padding_mask=src_key_padding_mask, pos=pos)
        if self.norm is not None:
            output = self.norm(output)
        return output


class TransformerDecoder(nn.Module):
    def __init__(
        self,
        decoder_layer: nn.Module,
        num_layers: int,
        norm: Optional[nn.Module] = None,
        return_intermediate: bool = False,
    ):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.return_intermediate = return_intermediate

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            tgt: (Q, B, C); memory: (HW, B, C).
        Returns:
            (L, Q, B, C): the output of every layer when return_intermediate, else (1, Q, B, C)
            with only the last one; each through ``norm`` when there is one.
        """
        output = tgt
        intermediate = []
        for layer in self.layers:
            output = layer(
                output,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                pos=pos,
                query_pos=query_pos,
            )
            if self.return_intermediate:
                intermediate.append(self.norm(output) if self.norm is not None else output)
        if self.norm is not None:
            output = self.norm(output)
        if self.return_intermediate:
            return torch.stack(intermediate)
        return output.unsqueeze(0)


class _DetrLayer(nn.Module):
    """
    The modules of a DETR layer: self-attention (``self_attn``), in decoder layers
    (``_cross_attention``) also attention to memory (``multihead_attn``), and an FFN
    (``linear1``, ``dropout``, ``linear2``); residual sub-layer i has its own ``norm{i}`` and
    ``dropout{i}``. Created in the reference's order, so that seeded initialisation matches.
    """

    _cross_attention: bool

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        if self._cross_attention:
            self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        for i in range(1, self._num_sublayers() + 1):
            self.add_module(f"norm{i}", nn.LayerNorm(d_model))
        for i in range(1, self._num_sublayers() + 1):
            self.add_module(f"dropout{i}", nn.Dropout(dropout))
        self.normalize_before = normalize_before

    def _num_sublayers(self) -> int:
        return 3 if self._cross_attention else 2

    def _self_attention_block(
        self, x: Tensor, pos: Optional[Tensor], mask: Optional[Tensor], key_padding_mask: Optional[Tensor]
    ) -> Tensor:
        """The first residual sub-layer: (L, B, C) -> (L, B, C)."""
        return residual(
            x, lambda y: self_attention(self.self_attn, y, pos, mask, key_padding_mask),
            self.norm1, self.dropout1, self.normalize_before,
        )

    def _ffn_block(self, x: Tensor) -> Tensor:
        """The FFN, the last residual sub-layer: (L, B, C) -> (L, B, C)."""
        last = self._num_sublayers()
        return residual(
            x, lambda y: feed_forward(self.linear1, self.dropout, self.linear2, y),
            getattr(self, f"norm{last}"), getattr(self, f"dropout{last}"), self.normalize_before,
        )


class TransformerEncoderLayer(_DetrLayer):
    """Self-attention, then FFN; each a residual sub-layer (post- or pre-norm)."""

    _cross_attention = False

    def forward(
        self,
        src: Tensor,
        src_mask: Optional[Tensor] = None,
        src_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
    ) -> Tensor:
        """(HW, B, C) -> (HW, B, C)"""
        return self._ffn_block(self._self_attention_block(src, pos, src_mask, src_key_padding_mask))


class TransformerDecoderLayer(_DetrLayer):
    """Self-attention, cross-attention to memory, FFN; each a residual sub-layer."""

    _cross_attention = True

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        """tgt (Q, B, C), memory (HW, B, C) -> (Q, B, C)"""
        tgt = self._self_attention_block(tgt, query_pos, tgt_mask, tgt_key_padding_mask)
        tgt = residual(
            tgt,
            lambda x: cross_attention(
                self.multihead_attn, x, memory, pos, query_pos, memory_mask, memory_key_padding_mask
            ),
            self.norm2, self.dropout2, self.normalize_before,
        )
        return self._ffn_block(tgt)
