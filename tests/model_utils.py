"""Helpers shared by the tests: the repo's paths, the reference data under tests/reference/,
configs and small models built from them."""
import functools
import json
import os
from typing import Dict, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from mask2former.config import add_maskformer2_config

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
REFERENCE = os.path.join(TESTS, "reference")  # copied from ../shared/reference
REFERENCE_DATASETS = os.path.join(REFERENCE, "datasets")


def reference_image_config_paths() -> List[str]:
    """The config paths of the reference model zoo's image models (config_paths.txt without
    its video configs), in the file's order."""
    with open(os.path.join(REFERENCE, "config_paths.txt")) as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line.startswith("configs/") and "youtubevis" not in line]


@functools.lru_cache(maxsize=None)
def official_state_dicts() -> Dict[str, Dict[str, str]]:
    """config path -> {state-dict key: shape as "AxB"} of the reference models
    (official_state_dict_keys.json). Callers must not modify the result: it is shared."""
    with open(os.path.join(REFERENCE, "official_state_dict_keys.json")) as f:
        return json.load(f)["models"]


def official_shape(config_path: str, key: str) -> Tuple[int, ...]:
    """The shape of state-dict entry ``key`` of the reference model of ``config_path``."""
    return tuple(int(s) for s in official_state_dicts()[config_path][key].split("x"))


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
