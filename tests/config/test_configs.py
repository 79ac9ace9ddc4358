"""The model-zoo yaml configs under configs/: they exist, merge, and carry the zoo's hyper-parameters."""
import functools
import glob
import os
import re

import pytest

from detectron2.config import CfgNode, get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from mask2former.config import add_maskformer2_config
from model_utils import REPO, official_shape, official_state_dicts, reference_image_config_paths

# The image-model config paths of the reference model zoo: users pass these to train_net.py / demo.
IMAGE_CONFIG_PATHS = reference_image_config_paths()

MODEL_CONFIG_PATHS = [p for p in IMAGE_CONFIG_PATHS if not os.path.basename(p).startswith("Base-")]

# every yaml under configs/ except the quick-start ones and the video ones (owned and tested
# elsewhere: tests/video/test_video_configs.py)
ALL_YAML = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if os.sep + "synthetic" + os.sep not in p and "youtubevis" not in p
)

# (dataset dir, task dir) -> NUM_CLASSES, TRAIN, TEST, mapper, (SEMANTIC_ON, INSTANCE_ON, PANOPTIC_ON)
DATASET_TASKS = {
    ("coco", "panoptic-segmentation"): (
        133, "coco_2017_train_panoptic", "coco_2017_val_panoptic_with_sem_seg", "coco_panoptic_lsj",
        (True, True, True)),
    ("coco", "instance-segmentation"): (
        80, "coco_2017_train", "coco_2017_val", "coco_instance_lsj", (False, True, False)),
    ("ade20k", "semantic-segmentation"): (
        150, "ade20k_sem_seg_train", "ade20k_sem_seg_val", "mask_former_semantic",
        (True, False, False)),
    ("ade20k", "panoptic-segmentation"): (
        150, "ade20k_panoptic_train", "ade20k_panoptic_val", "mask_former_panoptic",
        (True, True, True)),
    ("ade20k", "instance-segmentation"): (
        100, "ade20k_instance_train", "ade20k_instance_val", "mask_former_instance",
        (False, True, False)),
    ("cityscapes", "semantic-segmentation"): (
        19, "cityscapes_fine_sem_seg_train", "cityscapes_fine_sem_seg_val", "mask_former_semantic",
        (True, False, False)),
    ("cityscapes", "instance-segmentation"): (
        8, "cityscapes_fine_instance_seg_train", "cityscapes_fine_instance_seg_val",
        "mask_former_instance", (False, True, False)),
    ("cityscapes", "panoptic-segmentation"): (
        19, "cityscapes_fine_panoptic_train", "cityscapes_fine_panoptic_val", "mask_former_panoptic",
        (True, True, True)),
    ("mapillary-vistas", "semantic-segmentation"): (
        65, "mapillary_vistas_sem_seg_train", "mapillary_vistas_sem_seg_val",
        "mask_former_semantic", (True, False, False)),
    ("mapillary-vistas", "panoptic-segmentation"): (
        65, "mapillary_vistas_panoptic_train", "mapillary_vistas_panoptic_val",
        "mask_former_panoptic", (False, False, True)),
}

# file-name tag -> EMBED_DIM, DEPTHS, NUM_HEADS, WINDOW_SIZE, PRETRAIN_IMG_SIZE, WEIGHTS
SWIN_PRESETS = {
    "swin_tiny_": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 224, "swin_tiny_patch4_window7_224.pkl"),
    "swin_small_": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 224, "swin_small_patch4_window7_224.pkl"),
    "swin_base_384_": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384,
                       "swin_base_patch4_window12_384.pkl"),
    "swin_base_IN21k_384_": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384,
                             "swin_base_patch4_window12_384_22k.pkl"),
    "swin_large_IN21k_384_": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 384,
                              "swin_large_patch4_window12_384_22k.pkl"),
}


def reference_shapes(path: str):
    """Facts read off the reference state dict of ``path`` (official_state_dict_keys.json):
    (class_embed rows = NUM_CLASSES + 1, query_feat rows, backbone has num_batches_tracked)."""
    class_rows = official_shape(path, "sem_seg_head.predictor.class_embed.weight")[0]
    queries = official_shape(path, "sem_seg_head.predictor.query_feat.weight")[0]
    keys = official_state_dicts()[path]
    has_bn_counters = any(k.startswith("backbone.") and k.endswith(".num_batches_tracked") for k in keys)
    return class_rows, queries, has_bn_counters


def _scaled_sizes(base: int):
    """The zoo's multi-scale training sizes, written in its yaml as an eval'd list comprehension."""
    return [int(x * 0.1 * base) for x in range(5, 21)]


@functools.lru_cache(maxsize=None)
def load(path: str) -> CfgNode:
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    # allow_unsafe=False: the configs must not rely on python-evaluating yaml tags
    cfg.merge_from_file(os.path.join(REPO, path), allow_unsafe=False)
    cfg.freeze()
    return cfg


def dataset_task(path: str):
    parts = path.split("/")
    return parts[1], parts[2]


def test_every_reference_path_exists():
    missing = [p for p in IMAGE_CONFIG_PATHS if not os.path.isfile(os.path.join(REPO, p))]
    assert missing == []
    assert len(IMAGE_CONFIG_PATHS) == 57


def test_no_config_outside_the_reference_list():
    # a stray config (a typo'd name) would be silently unused by the model zoo's paths
    assert sorted(set(ALL_YAML) - set(IMAGE_CONFIG_PATHS)) == []


@pytest.mark.parametrize("path", ALL_YAML)
def test_merges_into_maskformer2_config(path):
    # merge_from_file raises KeyError on any key that the config system does not define
    cfg = load(path)
    assert cfg.VERSION == 2


@pytest.mark.parametrize("path", MODEL_CONFIG_PATHS)
def test_architecture_shared_by_every_model(path):
    cfg = load(path)
    head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    assert cfg.MODEL.META_ARCHITECTURE == "MaskFormer"
    assert head.NAME == "MaskFormerHead"
    assert head.PIXEL_DECODER_NAME == "MSDeformAttnPixelDecoder"
    assert head.IN_FEATURES == ["res2", "res3", "res4", "res5"]
    assert head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES == ["res3", "res4", "res5"]
    assert (head.CONVS_DIM, head.MASK_DIM, head.NORM, head.COMMON_STRIDE) == (256, 256, "GN", 4)
    assert head.TRANSFORMER_ENC_LAYERS == 6
    assert mf.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder"
    assert mf.TRANSFORMER_IN_FEATURE == "multi_scale_pixel_decoder"
    assert mf.DEC_LAYERS == 10  # 9 decoder layers + the loss on the learnable queries
    assert (mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT, mf.NO_OBJECT_WEIGHT) == (
        2.0, 5.0, 5.0, 0.1)
    assert (mf.HIDDEN_DIM, mf.NHEADS, mf.DIM_FEEDFORWARD, mf.DROPOUT) == (256, 8, 2048, 0.0)
    assert (mf.ENC_LAYERS, mf.PRE_NORM, mf.ENFORCE_INPUT_PROJ) == (0, False, False)
    assert mf.DEEP_SUPERVISION and mf.SIZE_DIVISIBILITY == 32
    assert (mf.TRAIN_NUM_POINTS, mf.OVERSAMPLE_RATIO, mf.IMPORTANCE_SAMPLE_RATIO) == (
        12544, 3.0, 0.75)
    assert cfg.MODEL.PIXEL_MEAN == [123.675, 116.280, 103.530]
    assert cfg.MODEL.PIXEL_STD == [58.395, 57.120, 57.375]
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    solver = cfg.SOLVER
    assert (solver.OPTIMIZER, solver.BASE_LR, solver.IMS_PER_BATCH) == ("ADAMW", 1e-4, 16)
    assert (solver.WEIGHT_DECAY, solver.BACKBONE_MULTIPLIER) == (0.05, 0.1)
    assert solver.CLIP_GRADIENTS.ENABLED and solver.CLIP_GRADIENTS.CLIP_TYPE == "full_model"
    assert (solver.CLIP_GRADIENTS.CLIP_VALUE, solver.CLIP_GRADIENTS.NORM_TYPE) == (0.01, 2.0)
    assert solver.AMP.ENABLED
    assert cfg.INPUT.FORMAT == "RGB"


@pytest.mark.parametrize("path", MODEL_CONFIG_PATHS)
def test_dataset_and_task(path):
    cfg = load(path)
    num_classes, train, test, mapper, outputs = DATASET_TASKS[dataset_task(path)]
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == num_classes
    assert cfg.DATASETS.TRAIN == (train,)
    assert cfg.DATASETS.TEST == (test,)
    assert cfg.INPUT.DATASET_MAPPER_NAME == mapper
    t = cfg.MODEL.MASK_FORMER.TEST
    assert (t.SEMANTIC_ON, t.INSTANCE_ON, t.PANOPTIC_ON) == outputs
    assert t.OVERLAP_THRESHOLD == 0.8
    # Mapillary's label 65 is "unlabeled"
    assert cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == (65 if path.split("/")[1] == "mapillary-vistas"
                                                   else 255)


@pytest.mark.parametrize("path", MODEL_CONFIG_PATHS)
def test_backbone_follows_file_name(path):
    cfg = load(path)
    name = os.path.basename(path)
    swin = [tag for tag in SWIN_PRESETS if tag in name]
    if not swin:
        assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone"
        depth = 101 if "_R101_" in name else 50
        assert cfg.MODEL.RESNETS.DEPTH == depth
        assert cfg.MODEL.RESNETS.STEM_OUT_CHANNELS == 64 and not cfg.MODEL.RESNETS.STRIDE_IN_1X1
        assert cfg.MODEL.RESNETS.OUT_FEATURES == ["res2", "res3", "res4", "res5"]
        assert cfg.MODEL.WEIGHTS == (
            "R-101.pkl" if depth == 101 else "detectron2://ImageNetPretrained/torchvision/R-50.pkl")
        # trained (synchronized) BN on Cityscapes only; elsewhere ImageNet statistics stay frozen
        norm = "SyncBN" if path.startswith("configs/cityscapes/") else "FrozenBN"
        assert cfg.MODEL.RESNETS.NORM == norm
        assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 100
        return
    (tag,) = swin
    embed, depths, heads, window, pretrain, weights = SWIN_PRESETS[tag]
    s = cfg.MODEL.SWIN
    assert cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer"
    assert (s.EMBED_DIM, s.DEPTHS, s.NUM_HEADS, s.WINDOW_SIZE) == (embed, depths, heads, window)
    assert (s.PRETRAIN_IMG_SIZE, s.APE, s.PATCH_NORM, s.DROP_PATH_RATE) == (
        pretrain, False, True, 0.3)
    assert cfg.MODEL.WEIGHTS == weights
    # Swin-L uses 200 queries, except for ADE20K semantic segmentation
    large = tag == "swin_large_IN21k_384_"
    queries = 200 if large and dataset_task(path) != ("ade20k", "semantic-segmentation") else 100
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == queries


@pytest.mark.parametrize("path", MODEL_CONFIG_PATHS)
def test_schedule(path):
    cfg = load(path)
    dataset = path.split("/")[1]
    if dataset == "coco":
        epochs100 = path.endswith("_100ep.yaml")
        assert cfg.SOLVER.MAX_ITER == (737500 if epochs100 else 368750)
        assert cfg.SOLVER.STEPS == ((655556, 710184) if epochs100 else (327778, 355092))
        assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR"
        assert (cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.WARMUP_ITERS) == (1.0, 10)
        return
    # ADE20K's R101 file is named "90k" in the zoo but trains for 160k iterations
    max_iter = {"ade20k": 160000, "cityscapes": 90000, "mapillary-vistas": 300000}[dataset]
    assert cfg.SOLVER.MAX_ITER == max_iter
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"
    assert (cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.WARMUP_ITERS) == (1.0, 0)


@pytest.mark.parametrize("path", MODEL_CONFIG_PATHS)
def test_input_sizes(path):
    cfg, inp = load(path), load(path).INPUT
    dataset, task = dataset_task(path)
    if dataset == "coco":
        assert (inp.IMAGE_SIZE, inp.MIN_SCALE, inp.MAX_SCALE) == (1024, 0.1, 2.0)
        assert cfg.TEST.EVAL_PERIOD == 5000
        return
    if dataset == "ade20k":
        res = 512 if task == "semantic-segmentation" and "res640" not in path else 640
        expected = (res, res, 4 * res, 4 * res, (res, res), res)
    elif dataset == "cityscapes":
        expected = (1024, 1024, 4096, 2048, (512, 1024), -1)
    else:
        expected = (2048, 2048, 8192, 2048, (1024, 1024), 1024)
    base, min_test, max_train, max_test, crop, size_div = expected
    assert inp.MIN_SIZE_TRAIN == tuple(_scaled_sizes(base))
    assert inp.MIN_SIZE_TRAIN_SAMPLING == "choice"
    assert (inp.MIN_SIZE_TEST, inp.MAX_SIZE_TRAIN, inp.MAX_SIZE_TEST) == (
        min_test, max_train, max_test)
    assert inp.CROP.ENABLED and inp.CROP.TYPE == "absolute" and tuple(inp.CROP.SIZE) == crop
    assert inp.CROP.SINGLE_CATEGORY_MAX_AREA == 1.0
    assert inp.COLOR_AUG_SSD
    assert inp.SIZE_DIVISIBILITY == size_div
    assert not cfg.TEST.AUG.ENABLED


def test_coco_panoptic_r50_key_values():
    cfg = load("configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    mf = cfg.MODEL.MASK_FORMER
    assert mf.DEC_LAYERS == 10
    assert (mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT) == (2.0, 5.0, 5.0)
    assert mf.NUM_OBJECT_QUERIES == 100
    assert mf.TRAIN_NUM_POINTS == 12544
    assert cfg.INPUT.IMAGE_SIZE == 1024
    assert (mf.TEST.OVERLAP_THRESHOLD, mf.TEST.OBJECT_MASK_THRESHOLD) == (0.8, 0.8)
    assert cfg.MODEL.RESNETS.RES5_MULTI_GRID == [1, 1, 1]
    assert cfg.MODEL.RESNETS.STEM_TYPE == "basic"
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS and cfg.DATALOADER.NUM_WORKERS == 4


def test_swin_large_uses_200_queries():
    for path in [
        "configs/coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
        "configs/coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
    ]:
        assert load(path).MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 200


def test_ade20k_semantic_sizes_written_out():
    # the zoo's yaml computes these with a python eval tag; ours lists them
    inp = load("configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml").INPUT
    assert inp.MIN_SIZE_TRAIN == (256, 307, 358, 409, 460, 512, 563, 614, 665, 716, 768, 819,
                                  870, 921, 972, 1024)


@pytest.mark.parametrize("path", sorted(official_state_dicts()))
def test_agrees_with_reference_state_dict_shapes(path):
    cfg = load(path)
    class_rows, queries, has_bn_counters = reference_shapes(path)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1 == class_rows
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == queries
    # only trainable BN (SyncBN) registers num_batches_tracked buffers; FrozenBN does not
    if cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone":
        assert (cfg.MODEL.RESNETS.NORM == "SyncBN") == has_bn_counters


def test_model_configs_chain_to_their_dataset_base():
    for path in MODEL_CONFIG_PATHS:
        with open(os.path.join(REPO, path)) as f:
            base = re.search(r"^_BASE_:\s*(\S+)", f.read(), re.M)
        assert base is not None, f"{path} has no _BASE_"
        target = os.path.normpath(os.path.join(os.path.dirname(path), base.group(1)))
        if "/swin/" in path:
            # Swin configs only swap the backbone of the dataset's R50 config
            assert re.fullmatch(r"maskformer2?_R50_bs16_\w+\.yaml", os.path.basename(target)), path
        else:
            assert os.path.basename(target).startswith(("Base-", "maskformer2_R50_")), path
        assert target in IMAGE_CONFIG_PATHS, path
