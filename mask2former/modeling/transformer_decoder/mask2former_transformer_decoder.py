"""
The Mask2Former transformer decoder: learnable queries refined by masked cross-attention to
multi-scale pixel features, one scale per layer in round robin, with a mask/class prediction
after every layer.
"""
from typing import Dict, List, Optional, Tuple

import fvcore.nn.weight_init as weight_init
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.config import configurable

from .layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer, aux_outputs, run_layer
from .maskformer_transformer_decoder import TRANSFORMER_DECODER_REGISTRY, decoder_config
from .position_encoding import PositionEmbeddingSine

# The number of feature levels Mask2Former's decoder attends to in round robin, lowest
# resolution first; every pixel decoder returns this many multi-scale maps.
NUM_MULTI_SCALE_LEVELS = 3


def _resize_maps(x: Tensor, size) -> Tensor:
    """(B, C, H, W) -> (B, C, *size) bilinear resize, as B * C one-channel maps: PyTorch's CPU
    kernel converts a many-channel NCHW input to channels-last and back on every call, a copy
    of the whole input; resizing one-channel maps instead gives the same values up to rounding."""
    b, c, h, w = x.shape
    out = F.interpolate(x.reshape(b * c, 1, h, w), size=size, mode="bilinear", align_corners=False)
    return out.view(b, c, *out.shape[-2:])


def attention_mask_from_logits(mask_logits: Tensor, num_heads: int, additive: bool = False) -> Tensor:
    """
    Args:
        mask_logits: (B, Q, h, w) mask logits at the resolution of the attended features.
        num_heads: number of attention heads.
        additive: the float form for exported graphs (see below).
    Returns:
        (B*num_heads, Q, h*w) bool, True = not attended (sigmoid < 0.5), detached; a query
        whose mask is empty attends everywhere (:func:`unmask_empty_queries`). With
        ``additive``, (B, 1, Q, h*w) floats of ``mask_logits``' dtype, 0 where attended and the
        dtype's lowest value where not, for every head alike (``CrossAttentionLayer`` adds it
        to each head's scores, where it gives the same softmax as -inf: exp underflows to 0,
        and every query attends somewhere).
    """
    # Thresholded once per image and then copied to every head: sigmoid is elementwise, so this
    # equals thresholding the head-repeated logits. `sigmoid() < 0.5` is kept rather than `< 0`
    # because sigmoid rounds to exactly 0.5 for tiny negative logits.
    attn_mask = unmask_empty_queries((mask_logits.sigmoid().flatten(2) < 0.5).detach())
    if additive:
        # nn.MultiheadAttention turns a bool mask into -inf itself, but in an exported graph
        # that is a Where over every head's copy; a cast and a product, once per image and
        # broadcast over the heads, cost a fraction of it (onnxruntime's Where with a scalar
        # operand is slow: 17 ms for the R50 decoder at 800x1344, the heads' copies 26 ms)
        return (attn_mask.to(mask_logits.dtype) * torch.finfo(mask_logits.dtype).min).unsqueeze(1)
    batch, num_queries, hw = attn_mask.shape
    return attn_mask.unsqueeze(1).expand(batch, num_heads, num_queries, hw).flatten(0, 1)


def unmask_empty_queries(attn_mask: Tensor) -> Tensor:
    """
    A query whose mask is empty (no pixel attended) attends everywhere instead, since
    attention over nothing is undefined (softmax of all -inf gives NaN). Whether a mask is
    empty does not depend on the head, so this runs before the copy to every head.

    Args:
        attn_mask: (N, Q, HW) bool, True = not attended.
    Returns:
        the new (N, Q, HW) mask.
    """
    return attn_mask & ~attn_mask.all(dim=-1, keepdim=True)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """
    Mask2Former's decoder. Layer ``i`` does masked cross-attention to feature level ``i % NUM_MULTI_SCALE_LEVELS``
    (lowest resolution first), then self-attention among the queries, then an FFN; the attention
    mask of each layer comes from the mask predicted after the previous one.
    """

    # True while a model is exported (mask2former.export): the attention masks are made float
    # (see attention_mask_from_logits) and the mask logits one MatMul (see mask_logits), as
    # MSDeformAttn.traceable swaps its kernel
    traceable = False

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        activation_checkpointing: bool = False,
    ):
        """
        Args:
            in_channels: channels of the multi-scale features.
            mask_classification: also predict a class per query (K classes + "no object").
            num_classes: K.
            hidden_dim: transformer width.
            num_queries: number of queries Q.
            nheads: attention heads.
            dim_feedforward: FFN hidden width.
            dec_layers: number of transformer layers (the prediction from the learnable queries
                themselves comes on top, so there are dec_layers + 1 predictions).
            pre_norm: pre-norm instead of post-norm layers.
            mask_dim: channels of the per-pixel mask features.
            enforce_input_project: add a 1x1 conv on features even if in_channels == hidden_dim.
            activation_checkpointing: recompute each layer's activations in backward instead
                of keeping them (see :func:`run_layer`).
        """
        super().__init__()
        self.mask_classification = mask_classification

        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.num_heads = nheads
        self.num_layers = dec_layers
        self.activation_checkpointing = activation_checkpointing
        self.transformer_self_attention_layers = nn.ModuleList()
        self.transformer_cross_attention_layers = nn.ModuleList()
        self.transformer_ffn_layers = nn.ModuleList()
        for _ in range(dec_layers):
            self.transformer_self_attention_layers.append(
                SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_cross_attention_layers.append(
                CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_ffn_layers.append(
                FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm)
            )
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.num_queries = num_queries
        # content and positional parts of the queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)

        self.num_feature_levels = NUM_MULTI_SCALE_LEVELS
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())

        if self.mask_classification:
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> Dict:
        dec_layers = cfg.MODEL.MASK_FORMER.DEC_LAYERS
        # The config counts the prediction from the learnable queries as a layer.
        assert dec_layers >= 1, (
            f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1 for {cls.__name__} (it counts the "
            f"prediction from the learnable queries), got {dec_layers}"
        )
        return {
            **decoder_config(cfg, in_channels, mask_classification),
            "dec_layers": dec_layers - 1,
            "activation_checkpointing": cfg.MODEL.MASK_FORMER.get("ACTIVATION_CHECKPOINTING", False),
        }

    def forward(
        self, x: List[Tensor], mask_features: Tensor, mask: Optional[Tensor] = None
    ) -> Dict[str, object]:
        """
        Args:
            x: 3 feature maps (B, in_channels, H_l, W_l), lowest resolution first.
            mask_features: (B, mask_dim, H, W) per-pixel embeddings.
            mask: unused (padding is not masked in this decoder).
        Returns:
            dict with "pred_logits" (B, Q, K+1) (if mask_classification) and "pred_masks"
            (B, Q, H, W) from the last layer; in training also "aux_outputs": a list of dicts of
            the same keys for each earlier prediction (the learnable queries', then layers
            0..L-2), for the deep-supervision losses. Inference does not compute the earlier
            full-resolution masks.
        """
        del mask
        predictions_class, predictions_mask, _ = self.decode(x, mask_features)
        return self.predictions_dict(predictions_class, predictions_mask)

    def predictions_dict(
        self, predictions_class: List[Tensor], predictions_mask: List[Tensor]
    ) -> Dict[str, object]:
        """The output dict of :meth:`forward` from the predictions of :meth:`decode`."""
        out: Dict[str, object] = {"pred_masks": predictions_mask[-1]}
        if self.mask_classification:
            out["pred_logits"] = predictions_class[-1]
        if self.training:
            out["aux_outputs"] = aux_outputs(
                predictions_class if self.mask_classification else None, predictions_mask
            )
        return out

    def memory(self, x: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """
        The attended features and their position encodings, per level.

        Args:
            x: feature maps (N, in_channels, H_l, W_l).
        Returns:
            src and pos: lists of (L_l, B, hidden_dim) sequences, here L_l = H_l*W_l and B = N.
        """
        src, pos = [], []
        for i in range(self.num_feature_levels):
            pos.append(self.memory_sequence(self.position_encoding(x[i]).flatten(2)))
            feat = self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(self.memory_sequence(feat))
        return src, pos

    def position_encoding(self, feature: Tensor) -> Tensor:
        """(N, C, H, W) features -> (N, hidden_dim, H, W) position encoding."""
        return self.pe_layer(feature, None)

    def memory_sequence(self, flat: Tensor) -> Tensor:
        """(N, C, HW) per-image maps -> (HW, N, C), the attended sequence of each image."""
        return flat.permute(2, 0, 1)

    def mask_logits(self, mask_embed: Tensor, features: Tensor) -> Tensor:
        """(B, Q, C) mask embeddings . (B, C, H, W) per-pixel features -> (B, Q, H, W) logits."""
        if self.traceable:
            # the same product as one MatMul: onnxruntime's Einsum takes 2.4x as long (38 against
            # 16 ms for the last layer's masks at 800x1344)
            batch, channels, height, width = features.shape
            return torch.matmul(mask_embed, features.reshape(batch, channels, -1)).view(
                batch, mask_embed.shape[1], height, width)
        return torch.einsum("bqc,bchw->bqhw", mask_embed, features)

    def decode(
        self, x: List[Tensor], mask_features: Tensor
    ) -> Tuple[List[Optional[Tensor]], List[Tensor], Tensor]:
        """
        Run the layers.

        Args:
            x: 3 feature maps, lowest resolution first (see :meth:`memory`).
            mask_features: per-pixel embeddings (see :meth:`mask_logits`).
        Returns:
            class and mask predictions of every predicting layer (only the last one in
            inference), and the last layer's queries (Q, B, hidden_dim) before ``decoder_norm``.
        """
        if len(x) != self.num_feature_levels:
            raise ValueError(
                f"{type(self).__name__} expects {self.num_feature_levels} feature levels, "
                f"got {len(x)}"
            )
        size_list = [level.shape[-2:] for level in x]
        src, pos = self.memory(x)
        # Attention masks are predicted from the mask features resized to each level: bilinear
        # resizing and the per-query dot product are both linear, so this equals resizing every
        # query's full-resolution mask logits (up to float rounding), for a fraction of the cost:
        # mask_dim channels resized once per level instead of Q channels once per layer, and
        # dot products at the level's resolution.
        # Only the levels some layer attends to (all of them unless the decoder is very short).
        level_mask_features = [
            _resize_maps(mask_features, size_list[level])
            for level in range(min(self.num_feature_levels, self.num_layers))
        ]

        batch = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)  # (Q, B, C)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)  # (Q, B, C)

        predictions_class, predictions_mask = [], []
        for i in range(-1, self.num_layers):
            if i >= 0:
                level_index = i % self.num_feature_levels
                output = run_layer(
                    self.decoder_layer, i, output, src[level_index], pos[level_index], attn_mask,
                    query_embed, checkpointed=self.activation_checkpointing,
                )
            is_last = i == self.num_layers - 1
            # only the deep-supervision losses read the earlier full-resolution predictions
            predict = self.training or is_last
            next_level = (i + 1) % self.num_feature_levels
            outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
                output,
                mask_features if predict else None,
                None if is_last else level_mask_features[next_level],
            )
            if predict:
                predictions_class.append(outputs_class)
                predictions_mask.append(outputs_mask)
        return predictions_class, predictions_mask, output

    def decoder_layer(
        self, i: int, output: Tensor, memory: Tensor, pos: Tensor, attn_mask: Tensor, query_embed: Tensor
    ) -> Tensor:
        """Layer ``i``: masked cross-attention of the queries ``output`` (Q, B, C) to ``memory``
        (HW, B, C) with its ``pos``, then self-attention, then the FFN; -> (Q, B, C)."""
        output = self.transformer_cross_attention_layers[i](
            output, memory, memory_mask=attn_mask, memory_key_padding_mask=None, pos=pos, query_pos=query_embed
        )
        output = self.transformer_self_attention_layers[i](
            output, tgt_mask=None, tgt_key_padding_mask=None, query_pos=query_embed
        )
        return self.transformer_ffn_layers[i](output)

    def forward_prediction_heads(
        self,
        output: Tensor,
        mask_features: Optional[Tensor],
        attn_mask_features: Optional[Tensor] = None,
    ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        """
        Args:
            output: (Q, B, C) queries.
            mask_features: (B, mask_dim, H, W), or None to skip the predictions (class logits
                and full-resolution masks) when only the attention mask is needed.
            attn_mask_features: (B, mask_dim, h, w) mask features resized to the next layer's
                level, or None to skip the attention mask.
        Returns:
            outputs_class (B, Q, K+1) or None, outputs_mask (B, Q, H, W) logits or None, and
            attn_mask (B*nheads, Q, h*w) bool (True = not attended), or (B, 1, Q, h*w)
            additive floats when ``traceable`` (see :func:`attention_mask_from_logits`), or None.
        """
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # (B, Q, C)
        mask_embed = self.mask_embed(decoder_output)
        outputs_class, outputs_mask = None, None
        if mask_features is not None:
            if self.mask_classification:
                outputs_class = self.class_embed(decoder_output)
            outputs_mask = self.mask_logits(mask_embed, mask_features)
        attn_mask = None
        if attn_mask_features is not None:
            attn_logits = self.mask_logits(mask_embed, attn_mask_features)
            attn_mask = attention_mask_from_logits(attn_logits, self.num_heads, additive=self.traceable)
        return outputs_class, outputs_mask, attn_mask
