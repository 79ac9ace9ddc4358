"""The video configs: the 14 reference paths exist, merge with the video keys only, build, and
carry the paper's settings; ``add_maskformer2_video_config`` adds exactly the reference keys."""
import os

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config

import mask2former_video.modeling  # noqa: F401  (registers the video decoder)
import mask2former_video.video_maskformer_model  # noqa: F401  (registers VideoMaskFormer)
from mask2former.config import add_maskformer2_config
from mask2former_video import add_maskformer2_video_config
from model_utils import REFERENCE, REPO

with open(os.path.join(REFERENCE, "config_paths.txt")) as f:
    VIDEO_CONFIG_PATHS = [line.strip() for line in f if line.startswith("configs/youtubevis")]
MODEL_PATHS = [p for p in VIDEO_CONFIG_PATHS if not os.path.basename(p).startswith("Base-")]

# Not reference keys: this project's own (see mask2former_video/config.py).
PROJECT_KEYS = {"MODEL.MASK_FORMER.TEST.WINDOW_SIZE": "0"}

# file-name tag -> SWIN.EMBED_DIM, DEPTHS, NUM_HEADS, WINDOW_SIZE, PRETRAIN_IMG_SIZE, queries
SWIN_PRESETS = {
    "swin_tiny_": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 224, 100),
    "swin_small_": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 224, 100),
    "swin_base_IN21k_384_": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384, 100),
    "swin_large_IN21k_384_": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 384, 200),
}


def _base_cfg():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    return cfg


def load(path: str):
    cfg = _base_cfg()
    add_maskformer2_video_config(cfg)
    # merge_from_file raises KeyError on any key the config system does not define
    cfg.merge_from_file(os.path.join(REPO, path))
    return cfg


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def test_fourteen_reference_paths_exist():
    assert len(VIDEO_CONFIG_PATHS) == 14
    assert [p for p in VIDEO_CONFIG_PATHS if not os.path.isfile(os.path.join(REPO, p))] == []


def test_video_keys_equal_the_reference():
    with open(os.path.join(REFERENCE, "video_config_keys.txt")) as f:
        reference = dict(line.strip().split(" = ", 1) for line in f if " = " in line)
    cfg = _base_cfg()
    before = _flatten(cfg)
    add_maskformer2_video_config(cfg)
    after = _flatten(cfg)
    added = {k: repr(v) for k, v in after.items() if k not in before or before[k] != v}
    assert added == {**reference, **PROJECT_KEYS}


@pytest.mark.parametrize("path", VIDEO_CONFIG_PATHS)
def test_merges_with_the_paper_settings(path):
    cfg = load(path)
    year = "2019" if "youtubevis_2019" in path else "2021"
    assert cfg.DATASETS.TRAIN == (f"ytvis_{year}_train",)
    assert cfg.DATASETS.TEST == (f"ytvis_{year}_val",)
    assert cfg.INPUT.SAMPLING_FRAME_NUM == 2
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (360, 480) and cfg.INPUT.MIN_SIZE_TEST == 360
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (16, 0.0001)
    schedule = {"2019": (6000, (4000,)), "2021": (8000, (5500,))}[year]
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == schedule


@pytest.mark.parametrize("path", MODEL_PATHS)
def test_model_settings(path):
    cfg = load(path)
    mf = cfg.MODEL.MASK_FORMER
    assert cfg.MODEL.META_ARCHITECTURE == "VideoMaskFormer"
    assert mf.TRANSFORMER_DECODER_NAME == "VideoMultiScaleMaskedTransformerDecoder"
    assert (mf.DEC_LAYERS, mf.TRAIN_NUM_POINTS, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == (10, 12544, 40)
    assert cfg.MODEL.WEIGHTS.startswith("model_final_"), "initialised from a COCO instance model"
    tags = [tag for tag in SWIN_PRESETS if tag in os.path.basename(path)]
    if not tags:
        assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone"
        assert cfg.MODEL.RESNETS.DEPTH == (101 if "R101" in path else 50)
        assert mf.NUM_OBJECT_QUERIES == 100
        return
    embed, depths, heads, window, pretrain, queries = SWIN_PRESETS[tags[0]]
    swin = cfg.MODEL.SWIN
    assert cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer"
    assert (swin.EMBED_DIM, swin.DEPTHS, swin.NUM_HEADS) == (embed, depths, heads)
    assert (swin.WINDOW_SIZE, swin.PRETRAIN_IMG_SIZE, mf.NUM_OBJECT_QUERIES) == (window, pretrain, queries)


@pytest.mark.parametrize("path", MODEL_PATHS)
def test_builds(path):
    cfg = load(path)
    cfg.merge_from_list(["MODEL.DEVICE", "meta", "MODEL.WEIGHTS", ""])
    # the modules and parameter shapes, without allocating the weights
    with torch.device("meta"):
        model = build_model(cfg)
    assert type(model).__name__ == "VideoMaskFormer"
    predictor = model.sem_seg_head.predictor
    assert predictor.num_frames == 2
    assert predictor.query_feat.weight.shape[0] == cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES


def test_synthetic_video_config():
    cfg = load("configs/synthetic/video_instance.yaml")
    assert cfg.MODEL.META_ARCHITECTURE == "VideoMaskFormer"
    assert cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME == "VideoMultiScaleMaskedTransformerDecoder"
    assert cfg.DATASETS.TRAIN == ("synthetic_video_train",)
    assert cfg.DATASETS.TEST == ("synthetic_video_val",)
    assert cfg.INPUT.SAMPLING_FRAME_NUM == 2
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE) == (18, "", "cpu")
