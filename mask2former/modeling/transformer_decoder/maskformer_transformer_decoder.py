"""
MaskFormer's transformer decoder: a DETR transformer over one feature map; each query's output
predicts a class and a mask embedding, dotted with the per-pixel embeddings to give its mask.
"""
from typing import Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.utils.registry import Registry

from ...utils.registry import lookup
from .layers import MLP, aux_outputs
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Transformer decoders of MaskFormer / Mask2Former, selected by
``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``. Each is built as
``cls(cfg, in_channels, mask_classification)`` and returns a dict with ``pred_logits``
(B, Q, K+1) (when mask_classification), ``pred_masks`` (B, Q, H, W) and ``aux_outputs``.
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True) -> nn.Module:
    """Build the transformer decoder named by ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    decoder_cls = lookup(
        TRANSFORMER_DECODER_REGISTRY, name, "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME",
        "transformer decoder",
    )
    return decoder_cls(cfg, in_channels, mask_classification)


def decoder_config(cfg, in_channels: int, mask_classification: bool) -> Dict:
    """The constructor arguments both transformer decoders read from the config the same way."""
    mf = cfg.MODEL.MASK_FORMER
    return {
        "in_channels": in_channels,
        "mask_classification": mask_classification,
        "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        "hidden_dim": mf.HIDDEN_DIM,
        "num_queries": mf.NUM_OBJECT_QUERIES,
        "nheads": mf.NHEADS,
        "dim_feedforward": mf.DIM_FEEDFORWARD,
        "pre_norm": mf.PRE_NORM,
        "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
    }


@TRANSFORMER_DECODER_REGISTRY.register()
class StandardTransformerDecoder(nn.Module):
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
        dropout: float,
        dim_feedforward: int,
        enc_layers: int,
        dec_layers: int,
        pre_norm: bool,
        deep_supervision: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        """
        Args:
            in_channels: channels of the input feature map.
            mask_classification: also predict a class per query (K classes + "no object").
            num_classes: K.
            hidden_dim: transformer width.
            num_queries: number of queries Q.
            nheads: attention heads.
            dropout: dropout in the transformer.
            dim_feedforward: FFN hidden width.
            enc_layers: transformer encoder layers (may be 0).
            dec_layers: transformer decoder layers.
            pre_norm: pre-norm instead of post-norm layers.
            deep_supervision: predict after every decoder layer (auxiliary outputs).
            mask_dim: channels of the per-pixel mask features.
            enforce_input_project: add a 1x1 conv even if in_channels == hidden_dim.
        """
        super().__init__()
        self.mask_classification = mask_classification

        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(
            d_model=hidden_dim,
            dropout=dropout,
            nhead=nheads,
            dim_feedforward=dim_feedforward,
            num_encoder_layers=enc_layers,
            num_decoder_layers=dec_layers,
            normalize_before=pre_norm,
            return_intermediate_dec=deep_supervision,
        )
        self.num_queries = num_queries
        self.query_embed = nn.Embedding(num_queries, hidden_dim)

        if in_channels != hidden_dim or enforce_input_project:
            self.input_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
            weight_init.c2_xavier_fill(self.input_proj)
        else:
            self.input_proj = nn.Sequential()
        self.aux_loss = deep_supervision

        if self.mask_classification:
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> Dict:
        mf = cfg.MODEL.MASK_FORMER
        return {
            **decoder_config(cfg, in_channels, mask_classification),
            "dropout": mf.DROPOUT,
            "enc_layers": mf.ENC_LAYERS,
            "dec_layers": mf.DEC_LAYERS,
            "deep_supervision": mf.DEEP_SUPERVISION,
        }

    def forward(
        self, x: Tensor, mask_features: Tensor, mask: Optional[Tensor] = None
    ) -> Dict[str, object]:
        """
        Args:
            x: (B, in_channels, h, w) feature map.
            mask_features: (B, mask_dim, H, W) per-pixel embeddings.
            mask: (B, H', W') bool, True at padded pixels (any resolution), or None.
        Returns:
            dict with "pred_logits" (B, Q, K+1) (if mask_classification), "pred_masks"
            (B, Q, H, W) and, with deep supervision, "aux_outputs": dicts of the same keys for
            every decoder layer but the last.
        """
        if isinstance(x, (list, tuple)):
            raise ValueError(
                f"{type(self).__name__} takes a single feature map (B, C, H, W), got a "
                f"{type(x).__name__} of {len(x)}"
            )
        if mask is not None:
            mask = F.interpolate(mask[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
        pos = self.pe_layer(x, mask)
        hs, _memory = self.transformer(self.input_proj(x), mask, self.query_embed.weight, pos)
        # hs: (L, B, Q, C)

        out: Dict[str, object] = {}
        outputs_class = None
        if self.mask_classification:
            outputs_class = self.class_embed(hs)
            out["pred_logits"] = outputs_class[-1]
        if self.aux_loss:
            mask_embed = self.mask_embed(hs)
            outputs_seg_masks = torch.einsum("lbqc,bchw->lbqhw", mask_embed, mask_features)
            out["pred_masks"] = outputs_seg_masks[-1]
            out["aux_outputs"] = aux_outputs(outputs_class, outputs_seg_masks)
        else:
            mask_embed = self.mask_embed(hs[-1])
            out["pred_masks"] = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        return out
