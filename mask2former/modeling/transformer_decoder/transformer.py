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

from .layers import get_activation_fn, with_pos_embed, xavier_init_


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


class Transformer(nn.Module):
    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
        return_intermediate_dec: bool = False,
    ):
        super().__init__()
        encoder_layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation, normalize_before
        )
        # with pre-norm, the residual stream is never normalized inside the layers
        encoder_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.encoder = TransformerEncoder(encoder_layer, num_encoder_layers, encoder_norm)

        decoder_layer = TransformerDecoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation, normalize_before
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
        bs, c, h, w = src.shape
        src = src.flatten(2).permute(2, 0, 1)  # (HW, B, C)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)  # (Q, B, C)
        if mask is not None:
            mask = mask.flatten(1)  # (B, HW)

        # queries start empty: their identity is only in the positional embedding
        tgt = torch.zeros_like(query_embed)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        hs = self.decoder(
            tgt, memory, memory_key_padding_mask=mask, pos=pos_embed, query_pos=query_embed
        )
        return hs.transpose(1, 2), memory.permute(1, 2, 0).reshape(bs, c, h, w)


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


class TransformerEncoderLayer(nn.Module):
    """Self-attention + FFN, each with residual and LayerNorm (post- or pre-norm)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

        self.activation = get_activation_fn(activation)
        self.normalize_before = normalize_before

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self,
        src: Tensor,
        src_mask: Optional[Tensor] = None,
        src_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
    ) -> Tensor:
        """(HW, B, C) -> (HW, B, C)"""
        if self.normalize_before:
            src2 = self.norm1(src)
            q = k = with_pos_embed(src2, pos)
            src2 = self.self_attn(
                q, k, value=src2, attn_mask=src_mask, key_padding_mask=src_key_padding_mask
            )[0]
            src = src + self.dropout1(src2)
            src = src + self.dropout2(self._ffn(self.norm2(src)))
            return src
        q = k = with_pos_embed(src, pos)
        src2 = self.self_attn(
            q, k, value=src, attn_mask=src_mask, key_padding_mask=src_key_padding_mask
        )[0]
        src = self.norm1(src + self.dropout1(src2))
        src = self.norm2(src + self.dropout2(self._ffn(src)))
        return src


class TransformerDecoderLayer(nn.Module):
    """Self-attention, cross-attention to memory, FFN; each with residual and LayerNorm."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

        self.activation = get_activation_fn(activation)
        self.normalize_before = normalize_before

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

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
        pre = self.normalize_before
        # self-attention among queries
        x = self.norm1(tgt) if pre else tgt
        q = k = with_pos_embed(x, query_pos)
        tgt2 = self.self_attn(
            q, k, value=x, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask
        )[0]
        tgt = tgt + self.dropout1(tgt2)
        if not pre:
            tgt = self.norm1(tgt)
        # cross-attention to the image
        x = self.norm2(tgt) if pre else tgt
        tgt2 = self.multihead_attn(
            query=with_pos_embed(x, query_pos),
            key=with_pos_embed(memory, pos),
            value=memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )[0]
        tgt = tgt + self.dropout2(tgt2)
        if not pre:
            tgt = self.norm2(tgt)
        # FFN
        x = self.norm3(tgt) if pre else tgt
        tgt = tgt + self.dropout3(self._ffn(x))
        if not pre:
            tgt = self.norm3(tgt)
        return tgt
