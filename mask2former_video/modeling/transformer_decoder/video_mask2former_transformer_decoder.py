"""
The video Mask2Former decoder: the image decoder's layers, whose queries attend to the features
of all T frames of a clip at once (memory over (t, h, w)) and predict one mask tube each.
"""
from typing import Dict, List, Optional

import torch
from torch import Tensor

from detectron2.config import configurable

from mask2former.modeling.transformer_decoder.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
)
from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
)
from mask2former.modeling.transformer_decoder.maskformer_transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
)

from .position_encoding import PositionEmbeddingSine3D

__all__ = [
    "VideoMultiScaleMaskedTransformerDecoder",
    "CrossAttentionLayer",
    "SelfAttentionLayer",
    "FFNLayer",
    "MLP",
]


@TRANSFORMER_DECODER_REGISTRY.register()
class VideoMultiScaleMaskedTransformerDecoder(MultiScaleMaskedTransformerDecoder):
    """
    Mask2Former's decoder over clips. Inputs are per-frame maps of B clips of T frames, stacked
    as B*T images: B = batch and T = ``num_frames`` in training, B = 1 and T = all frames in
    inference. For each level, a clip's memory is its T frames' features flattened in (t, h, w)
    order, with a 3D sine position encoding; each query predicts a (T, H, W) mask tube, and its
    attention mask is its tube's logits resized frame by frame to the level (sigmoid < 0.5 is
    not attended; a query with an empty tube attends everywhere).

    Same parameters (names and shapes) as :class:`MultiScaleMaskedTransformerDecoder`.
    """

    @configurable
    def __init__(self, in_channels: int, mask_classification: bool = True, *, num_frames: int, **kwargs):
        """
        Args:
            in_channels, mask_classification, kwargs: as :class:`MultiScaleMaskedTransformerDecoder`.
            num_frames: frames per clip in training (``INPUT.SAMPLING_FRAME_NUM``).
        """
        super().__init__(in_channels, mask_classification, **kwargs)
        if num_frames < 1:
            raise ValueError(f"INPUT.SAMPLING_FRAME_NUM must be >= 1, got {num_frames}")
        self.num_frames = num_frames
        self.pe_layer = PositionEmbeddingSine3D(self.pe_layer.num_pos_feats, normalize=True)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool) -> Dict:
        args = super().from_config(cfg, in_channels, mask_classification)
        return {**args, "num_frames": cfg.INPUT.SAMPLING_FRAME_NUM}

    def num_clips(self, num_images: int) -> int:
        """B, from the number B*T of stacked frames."""
        if not self.training:
            return 1
        if num_images % self.num_frames:
            raise ValueError(
                f"{type(self).__name__}: {num_images} frames in a training batch is not a "
                f"multiple of INPUT.SAMPLING_FRAME_NUM = {self.num_frames}"
            )
        return num_images // self.num_frames

    def forward(
        self, x: List[Tensor], mask_features: Tensor, mask: Optional[Tensor] = None
    ) -> Dict[str, object]:
        """
        Args:
            x: 3 per-frame feature maps (B*T, in_channels, H_l, W_l), lowest resolution first,
                frames of a clip consecutive.
            mask_features: (B*T, mask_dim, H, W) per-frame per-pixel embeddings.
            mask: unused.
        Returns:
            dict with "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, T, H, W) mask logits and
            "pred_embeds" (B, Q, hidden_dim), the last layer's queries after ``decoder_norm``
            (used to link queries across windows of a long video); in training also
            "aux_outputs" (see :class:`MultiScaleMaskedTransformerDecoder`).
        """
        del mask
        predictions_class, predictions_mask, queries = self.decode(x, mask_features)
        out = self.predictions_dict(predictions_class, predictions_mask)
        out["pred_embeds"] = self.decoder_norm(queries).transpose(0, 1)
        return out

    def position_encoding(self, feature: Tensor) -> Tensor:
        """(B*T, C, H, W) -> (B*T, hidden_dim, H, W): the 3D encoding of each clip."""
        bt, c, h, w = feature.shape
        clips = feature.view(self.num_clips(bt), bt // self.num_clips(bt), c, h, w)
        return self.pe_layer(clips, None).flatten(0, 1)

    def memory_sequence(self, flat: Tensor) -> Tensor:
        """(B*T, C, HW) per-frame maps -> (T*HW, B, C), each clip's frames in (t, h, w) order."""
        bt, c, hw = flat.shape
        b = self.num_clips(bt)
        return flat.view(b, bt // b, c, hw).permute(1, 3, 0, 2).flatten(0, 1)

    def mask_logits(self, mask_embed: Tensor, features: Tensor) -> Tensor:
        """
        (B, Q, C) mask embeddings . (B*T, C, H, W) per-frame features -> (B, Q, T, H, W).

        The attention masks use features resized to the level frame by frame: equal to
        resizing each frame's mask logits (both are linear), up to float rounding.
        """
        b = mask_embed.shape[0]
        bt, c, h, w = features.shape
        return torch.einsum("bqc,btchw->bqthw", mask_embed, features.view(b, bt // b, c, h, w))
