"""Pixel-decoder lookup through detectron2's SEM_SEG_HEADS_REGISTRY, the one unknown-name error,
and MaskFormer's TransformerEncoderPixelDecoder."""
import pytest
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_model
from detectron2.utils.registry import Registry

import mask2former  # noqa: F401  (registers the components)
from mask2former.modeling.meta_arch.mask_former_head import MaskFormerHead
from mask2former.modeling.pixel_decoder.fpn import (
    TransformerEncoderPixelDecoder,
    build_pixel_decoder,
)
from mask2former.utils.registry import lookup
from model_utils import load_cfg, random_image

SYNTHETIC = "configs/synthetic/panoptic.yaml"
ENCODER_CONFIG = "configs/synthetic/maskformer_transformer_encoder.yaml"
# a ResNet-18's features for a 64x64 image
INPUT_SHAPE = {
    "res2": ShapeSpec(channels=64, stride=4),
    "res3": ShapeSpec(channels=128, stride=8),
    "res4": ShapeSpec(channels=256, stride=16),
    "res5": ShapeSpec(channels=512, stride=32),
}


def _features(batch=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(batch, s.channels, size // s.stride, size // s.stride, generator=g)
        for k, s in INPUT_SHAPE.items()
    }


@SEM_SEG_HEADS_REGISTRY.register()
class ThirdPartyPixelDecoder(nn.Module):
    """Registered the reference's way: a 1x1 conv of res2 as mask features, three pooled maps."""

    def __init__(self, cfg, input_shape):
        super().__init__()
        conv_dim = cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM
        self.mask_features = nn.Conv2d(input_shape["res2"].channels, cfg.MODEL.SEM_SEG_HEAD.MASK_DIM, 1)
        self.proj = nn.Conv2d(input_shape["res2"].channels, conv_dim, 1)

    def forward_features(self, features):
        x = self.proj(features["res2"])
        multi_scale = [nn.functional.avg_pool2d(x, k) for k in (8, 4, 2)]
        return self.mask_features(features["res2"]), None, multi_scale


@SEM_SEG_HEADS_REGISTRY.register()
class NotAPixelDecoder(nn.Module):
    def __init__(self, cfg, input_shape):
        super().__init__()


def test_third_party_pixel_decoder_works_with_the_head():
    cfg = load_cfg(SYNTHETIC, ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "ThirdPartyPixelDecoder"])
    head = MaskFormerHead(cfg, INPUT_SHAPE).eval()
    assert isinstance(head.pixel_decoder, ThirdPartyPixelDecoder)
    with torch.no_grad():
        out = head(_features())
    q, k = cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert out["pred_logits"].shape == (2, q, k + 1)
    assert out["pred_masks"].shape == (2, q, 16, 16)
    # the whole model too
    model = build_model(cfg).eval()
    with torch.no_grad():
        (result,) = model([{"image": random_image(64, 64), "height": 64, "width": 64}])
    assert result["sem_seg"].shape == (k, 64, 64)


def test_pixel_decoder_lookup_errors():
    cfg = load_cfg(SYNTHETIC, ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "NoSuchDecoder"])
    with pytest.raises(KeyError) as info:
        build_pixel_decoder(cfg, INPUT_SHAPE)
    message = str(info.value)
    assert "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME" in message and "'NoSuchDecoder'" in message
    for registered in ("BasePixelDecoder", "MSDeformAttnPixelDecoder", "TransformerEncoderPixelDecoder"):
        assert registered in message
    cfg = load_cfg(SYNTHETIC, ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "NotAPixelDecoder"])
    with pytest.raises(ValueError, match="PIXEL_DECODER_NAME: NotAPixelDecoder .*forward_features"):
        build_pixel_decoder(cfg, INPUT_SHAPE)


def test_lookup_names_key_name_and_registered_names():
    registry = Registry("THINGS")

    @registry.register()
    class Known:  # noqa: F841
        pass

    assert lookup(registry, "Known", "A.KEY", "thing") is Known
    with pytest.raises(KeyError) as info:
        lookup(registry, "Other", "A.KEY", "thing")
    assert info.value.args == ("A.KEY: unknown thing 'Other'; registered: Known",)


@pytest.mark.parametrize(
    "key, value", [("MODEL.SEM_SEG_HEAD.NAME", "NoSuchHead"), ("MODEL.BACKBONE.NAME", "NoSuchBackbone")]
)
def test_maskformer_names_the_config_key_of_an_unknown_name(key, value):
    with pytest.raises(KeyError, match=rf"{key}: unknown .* '{value}'; registered: .*"):
        build_model(load_cfg(SYNTHETIC, [key, value]))


def test_transformer_encoder_pixel_decoder():
    cfg = load_cfg(ENCODER_CONFIG)
    conv_dim, mask_dim = cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
    torch.manual_seed(0)
    decoder = build_pixel_decoder(cfg, INPUT_SHAPE).eval()
    assert type(decoder) is TransformerEncoderPixelDecoder
    names = set(decoder.state_dict())
    # the reference's layout: res5 has no lateral; its 3x3 conv reads the encoder output
    assert "adapter_4.weight" not in names and "adapter_3.weight" in names
    assert decoder.layer_4.weight.shape == (conv_dim, conv_dim, 3, 3)
    assert decoder.input_proj.weight.shape == (conv_dim, 512, 1, 1)
    assert "transformer.encoder.layers.0.linear1.weight" in names
    assert not any(n.startswith("transformer.encoder.layers.1.") for n in names)

    features = _features()
    with torch.no_grad():
        mask_features, encoder_features, multi_scale = decoder.forward_features(features)
        res5 = features["res5"]
        expected_encoder = decoder.transformer(decoder.input_proj(res5), None, decoder.pe_layer(res5))
    assert mask_features.shape == (2, mask_dim, 16, 16)
    assert torch.equal(encoder_features, expected_encoder)
    assert [tuple(f.shape) for f in multi_scale] == [(2, conv_dim, s, s) for s in (2, 4, 8)]
    assert torch.equal(multi_scale[0], decoder.layer_4(expected_encoder))


def test_maskformer_with_transformer_encoder_pixel_decoder_trains_and_infers():
    cfg = load_cfg(ENCODER_CONFIG, ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "64"])
    torch.manual_seed(0)
    model = build_model(cfg)
    image = random_image(64, 64)
    instances = _two_instances(64, 64)
    losses = model([{"image": image, "instances": instances}])
    # the main losses and, for DEC_LAYERS - 1 = 5 earlier decoder layers, auxiliary ones
    assert len(losses) == 3 * cfg.MODEL.MASK_FORMER.DEC_LAYERS
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.sem_seg_head.pixel_decoder.input_proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": image, "height": 64, "width": 64}])
    assert result["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 64, 64)
    assert result["panoptic_seg"][0].shape == (64, 64)


def _two_instances(h, w):
    from detectron2.structures import BitMasks, Instances

    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, :32, :32] = True
    masks[1, 32:, :] = True
    instances = Instances((h, w))
    instances.gt_classes = torch.tensor([0, 6])
    instances.gt_masks = BitMasks(masks)
    return instances
