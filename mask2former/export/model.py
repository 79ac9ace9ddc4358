"""The exportable part of a :class:`~mask2former.modeling.meta_arch.maskformer.MaskFormer`: the
network from the normalised image to the last layer's class and mask logits, as one traceable
module, and the check that a config builds such a model."""
import dataclasses
from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..modeling.meta_arch.maskformer import MaskFormer

# The components whose traces were checked to follow the input size (tests/export/).
EXPORTABLE_COMPONENTS = {
    "MODEL.META_ARCHITECTURE": ("MaskFormer",),
    "MODEL.SEM_SEG_HEAD.NAME": ("MaskFormerHead",),
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": ("MSDeformAttnPixelDecoder",),
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": ("MultiScaleMaskedTransformerDecoder",),
    "MODEL.BACKBONE.NAME": ("build_resnet_backbone", "D2SwinTransformer"),
}


def _config_value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def check_exportable(cfg) -> None:
    """
    Raises:
        ValueError: naming every config key whose component cannot be exported (a video model,
            another meta-architecture, backbone, head or decoder), with its value and the
            exportable ones.
    """
    problems = [
        f"{key} = {_config_value(cfg, key)!r} (exportable: {', '.join(allowed)})"
        for key, allowed in EXPORTABLE_COMPONENTS.items()
        if _config_value(cfg, key) not in allowed
    ]
    if problems:
        raise ValueError("This config cannot be exported: " + "; ".join(problems))


class ExportableMaskFormer(nn.Module):
    """
    ``MaskFormer``'s backbone and head on a batch of normalised images: the image is zero-padded
    to the model's size divisibility inside the graph, as ``ImageList.from_tensors`` pads it,
    so one traced graph serves any height and width. The post-processing stays outside.
    """

    def __init__(self, model: MaskFormer):
        super().__init__()
        if not isinstance(model, MaskFormer):
            raise TypeError(f"ExportableMaskFormer wraps a MaskFormer, got {type(model).__name__}")
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head
        self.size_divisibility = int(model.size_divisibility)

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image: (B, C, H, W) float, ``(image - pixel_mean) / pixel_std`` in INPUT.FORMAT order.
        Returns:
            class logits (B, Q, K + 1) (the last class is "no object") and mask logits
            (B, Q, H_pad / 4, W_pad / 4), H_pad and W_pad the padded size.
        """
        div = self.size_divisibility
        if div > 1:
            height, width = image.shape[-2:]
            image = F.pad(image, (0, (div - width % div) % div, 0, (div - height % div) % div))
        outputs = self.sem_seg_head(self.backbone(image))
        return outputs["pred_logits"], outputs["pred_masks"]


def deployment_info(model: MaskFormer, input_format: str) -> Dict:
    """What a runtime needs around the exported graph, as JSON-ready values: the input's
    channel order and normalisation, the size divisibility, the post-processing settings
    (``postprocess_numpy.postprocess``'s ``settings``) and, for panoptic inference, the (K,)
    thing-class mask."""
    settings = model.postprocessor.settings
    info = {
        "input_format": input_format,
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "size_divisibility": int(model.size_divisibility),
        "settings": dataclasses.asdict(settings),
    }
    if settings.panoptic_on:
        num_classes = model.sem_seg_head.num_classes
        info["is_thing"] = model._thing_classes_mask(num_classes).tolist()
    return info
