"""The exportable part of a :class:`~mask2former.modeling.meta_arch.maskformer.MaskFormer`: the
network from the normalised image to the last layer's class and mask logits, as one traceable
module, and the check that a config builds such a model."""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import yaml
from torch import nn
from torch.nn import functional as F

from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog
from detectron2.projects.deeplab import add_deeplab_config

from ..config import add_maskformer2_config
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


def check_exportable_file(config_file: str, opts: Sequence[str] = ()) -> None:
    """
    :func:`check_exportable` on what ``config_file`` and the ``KEY VALUE`` ``opts`` set, read
    before the config is built and checked: a config of another model (a video model) has
    keys of its own that the image config does not know, and is named as not exportable
    rather than as having unknown keys. A file that cannot be read is left to the config
    build, which names what is wrong with it.

    Raises:
        ValueError: as :func:`check_exportable`.
    """
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.set_new_allowed(True)  # keys of other models are accepted here, and ignored
    try:
        cfg.merge_from_file(config_file)
    except (OSError, yaml.YAMLError, KeyError, ValueError, AssertionError):
        return
    overrides = [item for key, value in zip(opts[0::2], opts[1::2]) if key in EXPORTABLE_COMPONENTS
                 for item in (key, value)]
    cfg.merge_from_list(overrides)
    check_exportable(cfg)


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

    def encoder_query_multiple(self) -> int:
        """
        A number that divides the deformable encoder's query count for every input: the image
        is padded to a multiple of the size divisibility ``div``, so a level of stride ``s``
        that divides ``div`` has (H / s) * (W / s) = (H / div) * (W / div) * (div / s) ** 2
        pixels, and the query count is (H / div) * (W / div) times the sum of (div / s) ** 2
        (21 for strides 8, 16, 32 and ``div`` 32). 0 when a stride does not divide ``div``.
        """
        strides = getattr(self.sem_seg_head.pixel_decoder, "transformer_feature_strides", None)
        div = self.size_divisibility
        if not strides or div < 1 or any(div % s for s in strides):
            return 0
        return sum((div // s) ** 2 for s in strides)

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


def _dataset_of(cfg: CfgNode) -> Optional[str]:
    """The dataset whose class names and colors the demo draws with: DATASETS.TEST[0], else
    DATASETS.TRAIN[0] (as demo/predictor.py's ``demo_metadata``)."""
    for names in (cfg.DATASETS.TEST, cfg.DATASETS.TRAIN):
        if names:
            return names[0]
    return None


def _class_table(metadata, num_classes: int) -> Dict[str, List]:
    """The names and RGB colors of the K contiguous class ids, from whichever of the metadata's
    stuff or thing tables has K entries (the model's classes are the dataset's contiguous ids:
    all classes in ``stuff_classes`` for semantic and panoptic datasets, ``thing_classes`` for
    instance datasets); empty when neither does."""
    for prefix in ("stuff", "thing"):
        names = metadata.get(f"{prefix}_classes")
        if names is not None and len(names) == num_classes:
            table = {"class_names": list(names)}
            colors = metadata.get(f"{prefix}_colors")
            if colors is not None and len(colors) == num_classes:
                table["class_colors"] = [[int(c) for c in color] for color in colors]
            return table
    return {}


def deployment_info(model: MaskFormer, cfg: CfgNode) -> Dict:
    """
    Everything a runtime needs around the exported graph to give ``demo/demo.py``'s results
    without the config, as JSON-ready values:

    - the input: "input_format" (channel order), "pixel_mean", "pixel_std", the test-time
      resize ("min_size_test", "max_size_test": detectron2's ``ResizeShortestEdge``) and
      "size_divisibility";
    - the graph's outputs: "num_queries" Q and "num_classes" K (class logits (B, Q, K + 1));
    - "settings": the post-processing settings (which outputs are on, the thresholds, the
      instances kept per image), ``postprocess_numpy.postprocess``'s ``settings``;
    - the classes, where the dataset's metadata has them: "dataset", "class_names" and
      "class_colors" (RGB) of the K classes, and "is_thing" (K,) (the thing / stuff split;
      panoptic inference needs it).
    """
    settings = model.postprocessor.settings
    num_classes = model.sem_seg_head.num_classes
    info = {
        "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "size_divisibility": int(model.size_divisibility),
        "num_queries": int(cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES),
        "num_classes": int(num_classes),
        "settings": dataclasses.asdict(settings),
    }
    dataset = _dataset_of(cfg)
    if dataset is not None:
        info["dataset"] = dataset
        info.update(_class_table(MetadataCatalog.get(dataset), num_classes))
    if settings.panoptic_on or model.metadata.get("thing_dataset_id_to_contiguous_id") is not None:
        info["is_thing"] = model._thing_classes_mask(num_classes).tolist()
    return info
