"""Helpers of the video model tests: configs and small models built from them, clips."""
from typing import Dict, List, Sequence

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.structures import BitMasks, Instances

import mask2former_video.modeling  # noqa: F401  (registers the video decoder)
import mask2former_video.video_maskformer_model  # noqa: F401  (registers VideoMaskFormer)
from mask2former.config import add_maskformer2_config
from mask2former_video import add_maskformer2_video_config
from model_utils import REPO, tiny_opts

VIDEO_R50 = "configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml"


def load_video_cfg(config_path: str, opts: Sequence[str] = ()):
    """A config from one of the repo's video config files, on the CPU, without weights."""
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_maskformer2_video_config(cfg)
    cfg.merge_from_file(f"{REPO}/{config_path}")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    return cfg


def tiny_video_model(opts: Sequence[str] = (), seed: int = 0):
    """A tiny video model from the R50 YouTube-VIS config (5 classes), in eval mode."""
    torch.manual_seed(seed)
    model = build_model(load_video_cfg(VIDEO_R50, [*tiny_opts(), *opts]))
    return model.eval()


def random_clip(num_frames: int, h: int, w: int, seed: int = 0) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for _ in range(num_frames)]


def clip_targets(num_frames: int, h: int, w: int, ids_per_frame: Sequence[Sequence[int]], classes: Sequence[int]):
    """T Instances of the same objects: ids_per_frame[t][i] is object i's id in frame t (-1 =
    absent, then an empty mask); object i is a box at a position moving with t."""
    frames = []
    for t in range(num_frames):
        masks = torch.zeros((len(classes), h, w), dtype=torch.bool)
        for i, object_id in enumerate(ids_per_frame[t]):
            if object_id != -1:
                top, left = 4 + 6 * i, 4 + 2 * t + 5 * i
                masks[i, top : top + 12, left : left + 14] = True
        instances = Instances((h, w))
        instances.gt_ids = torch.tensor(list(ids_per_frame[t]), dtype=torch.int64)
        instances.gt_classes = torch.tensor(list(classes), dtype=torch.int64)
        instances.gt_masks = BitMasks(masks)
        frames.append(instances)
    return frames


def training_video(num_frames: int, h: int, w: int, seed: int = 0) -> Dict:
    """A training clip dict with 3 objects, the second absent from the first frame."""
    ids = [[1, 2, 3] for _ in range(num_frames)]
    ids[0][1] = -1
    return {
        "image": random_clip(num_frames, h, w, seed),
        "instances": clip_targets(num_frames, h, w, ids, [0, 3, 4]),
        "height": h,
        "width": w,
    }
