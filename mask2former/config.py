"""Config keys of Mask2Former, added on top of detectron2's (and DeepLab's) defaults, and the
config of a command line (file + opts, checked, adapted to the machine)."""
import sys
from typing import Callable, List, Sequence, Tuple

import torch

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from .utils.config_merge import ConfigError, merge_config_file, merge_config_opts


def add_maskformer2_config(cfg: CN) -> None:
    """
    Add the Mask2Former keys to a detectron2 config, in place.

    Call ``detectron2.projects.deeplab.add_deeplab_config(cfg)`` first: the reference configs
    also use DeepLab's keys (poly LR schedule, ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``).
    """
    # data
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # large-scale jitter (LSJ) mappers
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    # Not a reference key (this project's own): when True, a training sample whose image or
    # labels cannot be read or are inconsistent (OSError, ValueError, KeyError from the mapper)
    # is logged and replaced by another random sample instead of stopping the run;
    # see mask2former.data.build.SkipBadSamples.
    cfg.DATALOADER.SKIP_BAD_SAMPLES = False
    # Not reference keys (this project's own), for evaluation throughput: images per batch of
    # the test loader (images of one size give the outputs of batch 1; images of different sizes
    # are padded to a common size, as in training, which moves outputs near the padded borders)
    # and threads that run the evaluators' per-image encoding (RLE, PNG) beside the model;
    # see mask2former.data.build.build_test_loader and mask2former.evaluation.ThreadedEvaluator.
    cfg.TEST.IMS_PER_BATCH = 1
    cfg.TEST.EVALUATOR_THREADS = 0

    # solver
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1

    # the model
    cfg.MODEL.MASK_FORMER = CN()
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 6
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    # This project's: recompute the activations of the backbone's blocks (frozen batch norm
    # only), the deformable encoder's and the transformer decoder's layers in backward instead
    # of keeping them (less training memory, more time).
    cfg.MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING = False
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    # images are padded to a multiple of this (-1: the backbone's own size_divisibility)
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
    # point-sampled mask losses
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75

    cfg.MODEL.MASK_FORMER.TEST = CN()
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    # project key: the semantic output's form. "scores": detectron2's "sem_seg" (K, H, W);
    # "labels": its argmax "sem_seg_labels" (H, W) and "sem_seg_label_scores" (H, W), never
    # holding (K, H, W) (a 3000x4000 output with 133 classes is 6 GB of scores)
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT = "scores"

    # pixel decoder
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8

    # Swin backbone
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.QKV_BIAS = True
    cfg.MODEL.SWIN.QK_SCALE = None
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.PATCH_NORM = True
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SWIN.USE_CHECKPOINT = False


def _adapt_to_machine(cfg: CN) -> List[str]:
    """Settings that cannot work on this machine are changed; returns the warnings to log."""
    notes = []
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        notes.append(f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but CUDA is not available: using 'cpu'")
        cfg.MODEL.DEVICE = "cpu"
    if cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda"):
        notes.append("SOLVER.AMP.ENABLED needs CUDA: mixed precision is disabled on the CPU")
        cfg.SOLVER.AMP.ENABLED = False
    if not cfg.MODEL.DEVICE.startswith("cuda"):
        # torch's SyncBatchNorm refuses CPU tensors in distributed training; detectron2's
        # naiveSyncBN all-reduces the statistics with any backend (plain BN in one process)
        for key in ("RESNETS", "SEM_SEG_HEAD"):
            if cfg.MODEL[key].NORM == "SyncBN":
                notes.append(f"MODEL.{key}.NORM: SyncBN needs CUDA: using 'naiveSyncBN'")
                cfg.MODEL[key].NORM = "naiveSyncBN"
    return notes


def build_config(
    args, extra_keys: Sequence[Callable[[CN], None]] = ()
) -> Tuple[CN, List[str]]:
    """
    The frozen config of ``args.config_file`` + ``args.opts``, and warnings about settings
    changed to fit this machine. ``extra_keys``: functions adding more keys (e.g. the video
    model's ``add_maskformer2_video_config``), called before the file is merged.

    Raises:
        ConfigError: unknown key, bad value or missing file, named in a one-line message.
    """
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    for add_keys in extra_keys:
        add_keys(cfg)
    if args.config_file:
        merge_config_file(cfg, args.config_file)
    merge_config_opts(cfg, args.opts or [])
    notes = _adapt_to_machine(cfg)
    cfg.freeze()
    return cfg, notes


def build_config_or_exit(parser, args) -> CN:
    """
    :func:`build_config` for command-line tools: a bad config ends the program through
    ``parser.error`` (one line, exit code 2); settings changed for this machine are printed as
    warnings.
    """
    try:
        cfg, notes = build_config(args)
    except ConfigError as e:
        parser.error(str(e))
    for note in notes:
        print("warning:", note, file=sys.stderr)
    return cfg
