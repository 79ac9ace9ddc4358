"""Helpers shared by model tests: configs and small models built from them."""
import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from mask2former.config import add_maskformer2_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")  # copied from ../shared/reference


def load_cfg(config_path: str, opts=()):
    """A config from one of the repo's config files, on the CPU."""
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, config_path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    return cfg


def tiny_opts(num_classes: int = 5):
    """Options shrinking a reference config into a model that runs in well under a second."""
    return [
        "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num_classes),
        # GroupNorm(32, .) needs more than one channel per group on 1x1 maps.
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", "64",
        "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
        "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
        "MODEL.MASK_FORMER.NHEADS", "4",
        "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
        "MODEL.MASK_FORMER.DEC_LAYERS", "4",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
        "TEST.DETECTIONS_PER_IMAGE", "10",
    ]


def random_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).float()


def make_synthetic_root(tmp_path_factory, prefix: str, num_train: int, num_val: int) -> str:
    """A small synthetic dataset in a temporary folder, registered under ``prefix`` (each
    test module its own, so registrations never clash); returns its root."""
    from mask2former.data.synthetic import ensure_synthetic_dataset, register_all_synthetic

    root = str(tmp_path_factory.mktemp("datasets"))
    ensure_synthetic_dataset(root, num_train=num_train, num_val=num_val)
    register_all_synthetic(root, prefix=prefix)
    return root


class LargestTensor(TorchDispatchMode):
    """Records the number of elements of the largest tensor any op creates while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out
