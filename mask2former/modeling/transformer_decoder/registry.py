"""Registry of transformer decoders: modules turning queries + pixel features into mask predictions."""
from detectron2.utils.registry import Registry
from torch import nn

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
    if name not in TRANSFORMER_DECODER_REGISTRY:
        known = ", ".join(sorted(k for k, _ in TRANSFORMER_DECODER_REGISTRY))
        raise KeyError(
            f"MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME: unknown transformer decoder {name!r}; "
            f"known: {known}"
        )
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)
