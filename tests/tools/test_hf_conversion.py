"""Hugging Face Mask2Former checkpoints <-> ours (mask2former/hf_conversion.py and the two tools)."""

import importlib.util
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # never the network: HF models are built from configs here

import pytest
import torch
import yaml

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import ImageList

import mask2former  # noqa: F401  (registers the components)
from mask2former.checkpoint import load_model_weights
from mask2former.hf_conversion import (
    HFConversionError,
    d2_config_to_hf_config,
    d2_to_hf_state_dict,
    hf_config_to_d2_overrides,
    hf_to_d2_state_dict,
    load_hf_checkpoint,
    read_class_names,
    read_hf_weights,
    register_class_names,
)
from model_utils import REPO, load_cfg

transformers = pytest.importorskip("transformers")

SWIN_T_PANOPTIC = "configs/coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml"
NUM_CLASSES, NUM_QUERIES = 133, 100


# the tools are scripts: `python tools/x.py` puts tools/ on sys.path, and so does this test
if os.path.join(REPO, "tools") not in sys.path:
    sys.path.append(os.path.join(REPO, "tools"))
hf_to_d2_tool = importlib.import_module("convert_hf_to_d2")
d2_to_hf_tool = importlib.import_module("convert_d2_to_hf")


def _swin_t_hf_config():
    swin = transformers.SwinConfig(
        embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    id2label = {i: f"class {i}" for i in range(NUM_CLASSES)}
    return transformers.Mask2FormerConfig(
        backbone_config=swin, num_queries=NUM_QUERIES, id2label=id2label
    )


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    """A random HF Swin-T Mask2Former saved by save_pretrained, and the model itself."""
    torch.manual_seed(0)
    model = transformers.Mask2FormerForUniversalSegmentation(_swin_t_hf_config()).eval()
    # HF's initialisation makes the 100 queries and all their predictions nearly equal (the
    # decoder's sublayers swamp the query features): spread them so that a wrong mapping shows
    head = model.model.transformer_module
    with torch.no_grad():
        head.queries_features.weight.normal_()
        head.queries_embedder.weight.normal_()
        for name, p in head.decoder.layers.named_parameters():
            if name.endswith(("out_proj.weight", "fc2.weight")):
                p.mul_(0.1)
        model.class_predictor.weight.normal_(std=0.1)
        for name, p in head.decoder.mask_predictor.mask_embedder.named_parameters():
            if name.endswith("weight"):
                p.normal_(std=0.05)
    directory = str(tmp_path_factory.mktemp("hf") / "swin_t")
    model.save_pretrained(directory)
    return model, directory


@pytest.fixture(scope="module")
def converted(hf_model_dir, tmp_path_factory):
    """tools/convert_hf_to_d2.py's output folder and our model built and loaded from it."""
    _, hf_dir = hf_model_dir
    out = str(tmp_path_factory.mktemp("d2") / "converted")
    assert hf_to_d2_tool.main([hf_dir, out]) == 0
    cfg = load_cfg(os.path.join(out, "config.yaml"))
    model = build_model(cfg).eval()
    load_model_weights(model, os.path.join(out, "model_final.pth"))
    return out, cfg, model


def _padded_input(model, h: int, w: int) -> torch.Tensor:
    """A random image normalised and zero-padded to a multiple of 32, as MaskFormer does."""
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * w)) * 255
    image = (image - model.pixel_mean) / model.pixel_std
    return ImageList.from_tensors([image], model.size_divisibility).tensor


@pytest.mark.parametrize("size", [(96, 128), (100, 140)])  # (100, 140) is padded to (128, 160)
def test_converted_model_gives_hf_outputs(hf_model_dir, converted, size):
    hf_model, _ = hf_model_dir
    model = converted[2]
    x = _padded_input(model, *size)
    with torch.no_grad():
        ours = model.sem_seg_head(model.backbone(x))
        theirs = hf_model(pixel_values=x, pixel_mask=torch.ones_like(x[:, 0], dtype=torch.long))
    assert (
        ours["pred_logits"].shape
        == theirs.class_queries_logits.shape
        == (1, NUM_QUERIES, NUM_CLASSES + 1)
    )
    assert (
        ours["pred_masks"].shape
        == theirs.masks_queries_logits.shape
        == (1, NUM_QUERIES, *[s // 4 for s in x.shape[-2:]])
    )
    assert (ours["pred_logits"] - theirs.class_queries_logits).abs().max() <= 1e-4
    assert (ours["pred_masks"] - theirs.masks_queries_logits).abs().max() <= 1e-4
    # not degenerate: the queries predict different classes and the semantic map has several
    assert ours["pred_logits"].argmax(-1).unique().numel() >= 20
    scores = torch.einsum(
        "bqc,bqhw->bchw", ours["pred_logits"].softmax(-1)[..., :-1], ours["pred_masks"].sigmoid()
    )
    assert scores.argmax(1).unique().numel() >= 5


def test_converted_config_and_metadata(hf_model_dir, converted):
    hf_model, _ = hf_model_dir
    out, cfg, model = converted
    with open(os.path.join(out, "config.yaml")) as f:
        written = yaml.safe_load(f)
    base = os.path.normpath(os.path.join(out, written["_BASE_"]))
    assert base == os.path.join(REPO, SWIN_T_PANOPTIC)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == NUM_CLASSES
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == NUM_QUERIES
    # DEC_LAYERS and HF's decoder_layers both count the prediction from the learnable queries
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == hf_model.config.decoder_layers == 10
    assert (
        len(model.sem_seg_head.predictor.transformer_ffn_layers)
        == len(hf_model.model.transformer_module.decoder.layers)
        == 9
    )
    assert list(cfg.MODEL.SWIN.DEPTHS) == [2, 2, 6, 2] and cfg.MODEL.SWIN.EMBED_DIM == 96
    with open(os.path.join(out, "metadata.json")) as f:
        names = json.load(f)["class_names"]
    assert names == [f"class {i}" for i in range(NUM_CLASSES)]
    assert (
        register_class_names("hf_test_classes", os.path.join(out, "metadata.json"))
        == "hf_test_classes"
    )
    assert MetadataCatalog.get("hf_test_classes").stuff_classes[5] == "class 5"


def test_round_trips_are_exact(hf_model_dir, converted, tmp_path):
    hf_model, _ = hf_model_dir
    out, _, model = converted
    hf_dir = str(tmp_path / "back_to_hf")
    argv = ["--config-file", os.path.join(out, "config.yaml"), "--metadata", os.path.join(out, "metadata.json"),
            os.path.join(out, "model_final.pth"), hf_dir]  # fmt: skip
    assert d2_to_hf_tool.main(argv) == 0
    # ours -> HF -> ours
    ours = model.state_dict()
    back, _ = read_hf_weights(hf_dir)
    again = hf_to_d2_state_dict(back)
    assert sorted(again) == sorted(ours)
    assert all(torch.equal(again[k], ours[k]) for k in ours)
    # HF -> ours -> HF, read by transformers itself
    reloaded = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(hf_dir)
    original = hf_model.state_dict()
    assert sorted(reloaded.state_dict()) == sorted(original)
    assert all(torch.equal(v, original[k]) for k, v in reloaded.state_dict().items())
    assert reloaded.config.id2label == hf_model.config.id2label
    assert hf_config_to_d2_overrides(reloaded.config) == hf_config_to_d2_overrides(hf_model.config)


def test_files_without_position_index_buffers_get_them_back(hf_model_dir, converted, tmp_path):
    from safetensors.torch import save_file

    hf_model, hf_dir = hf_model_dir
    pruned = {
        k: v.contiguous()
        for k, v in hf_model.state_dict().items()
        if not k.endswith("relative_position_index")
    }
    assert len(pruned) == len(hf_model.state_dict()) - 12  # one per Swin-T block
    (tmp_path / "pruned").mkdir()
    save_file(pruned, str(tmp_path / "pruned" / "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(hf_dir, "config.json")) as src, open(
        tmp_path / "pruned" / "config.json", "w"
    ) as dst:
        dst.write(src.read())
    state, info = load_hf_checkpoint(str(tmp_path / "pruned"))
    ours = converted[2].state_dict()
    assert sorted(state) == sorted(ours)
    assert all(torch.equal(state[k], ours[k]) for k in ours)
    assert info.weights_file == str(tmp_path / "pruned" / "model.safetensors")


def test_bad_input_is_one_clear_message(hf_model_dir, converted, tmp_path, capsys):
    _, hf_dir = hf_model_dir
    # an HF directory of another architecture
    other = str(tmp_path / "swin_classifier")
    transformers.SwinConfig(embed_dim=8, depths=[1], num_heads=[1]).save_pretrained(other)
    with pytest.raises(SystemExit):
        hf_to_d2_tool.main([other, str(tmp_path / "out1")])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "config.json: model_type 'swin'" in message and "is not Mask2Former" in message
    # a Mask2Former directory without weight files
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    with open(os.path.join(hf_dir, "config.json")) as src, open(
        no_weights / "config.json", "w"
    ) as dst:
        dst.write(src.read())
    with pytest.raises(SystemExit):
        hf_to_d2_tool.main([str(no_weights), str(tmp_path / "out2")])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{no_weights}: no weights (model.safetensors, pytorch_model.bin" in message
    # a ResNet model of ours cannot become an HF checkpoint
    r50 = os.path.join(REPO, "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    with pytest.raises(SystemExit):
        d2_to_hf_tool.main(
            ["--config-file", r50, str(tmp_path / "any.pth"), str(tmp_path / "out3")]
        )
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        "MODEL.BACKBONE.NAME = 'build_resnet_backbone'" in message
        and "Swin backbones only" in message
    )
    assert not os.path.exists(tmp_path / "out3")


def test_library_errors_name_the_fault(tmp_path):
    bad_metadata = tmp_path / "metadata.json"
    bad_metadata.write_text('{"class_names": "person"}')
    with pytest.raises(HFConversionError, match=f"{bad_metadata}: no class_names list"):
        read_class_names(str(bad_metadata))
    with pytest.raises(
        HFConversionError, match=r"weights.bin: 1 key\(s\) have no counterpart.*'head.fc.weight'"
    ):
        hf_to_d2_state_dict({"head.fc.weight": torch.zeros(1)}, "weights.bin")
    with pytest.raises(HFConversionError, match="not a Swin model"):
        d2_to_hf_state_dict({"backbone.res2.0.conv1.weight": torch.zeros(1)})
    resnet = transformers.Mask2FormerConfig(
        backbone_config=transformers.ResNetConfig(out_features=["stage1"])
    )
    with pytest.raises(HFConversionError, match="backbone 'resnet' is not supported; only Swin is"):
        hf_config_to_d2_overrides(resnet)
    with pytest.raises(HFConversionError, match="no config.json"):
        load_hf_checkpoint(REPO)
    cfg = load_cfg(SWIN_T_PANOPTIC)
    with pytest.raises(
        HFConversionError, match="2 class names for MODEL.SEM_SEG_HEAD.NUM_CLASSES = 133"
    ):
        d2_config_to_hf_config(cfg, ["a", "b"])
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    with pytest.raises(
        HFConversionError, match="PIXEL_DECODER_NAME = 'BasePixelDecoder' is not supported"
    ):
        d2_config_to_hf_config(cfg, ["x"] * 133)


SWIN_T = {"MODEL.SWIN.EMBED_DIM": 96, "MODEL.SWIN.DEPTHS": [2, 2, 6, 2]}
SWIN_S = {"MODEL.SWIN.EMBED_DIM": 96, "MODEL.SWIN.DEPTHS": [2, 2, 18, 2]}
SWIN_L = {"MODEL.SWIN.EMBED_DIM": 192, "MODEL.SWIN.DEPTHS": [2, 2, 18, 2]}
BASE_CONFIGS = [
    (133, SWIN_T, "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml"),
    (80, SWIN_L, "coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"),
    (150, SWIN_T, "ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml"),
    # no Swin-T config for Mapillary: its ResNet-50 one (the overrides set the model)
    (65, SWIN_T, "mapillary-vistas/semantic-segmentation/maskformer2_R50_bs16_300k.yaml"),
    (7, SWIN_S, "coco/panoptic-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml"),
]  # fmt: skip


@pytest.mark.parametrize("num_classes, swin, expected", BASE_CONFIGS)
def test_base_config_follows_classes_and_swin_size(num_classes, swin, expected):
    overrides = {"MODEL.SEM_SEG_HEAD.NUM_CLASSES": num_classes, **swin}
    assert hf_to_d2_tool.choose_base_config(overrides) == os.path.join(REPO, "configs", expected)
