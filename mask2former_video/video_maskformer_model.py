"""The ``VideoMaskFormer`` meta-architecture: Mask2Former for video instance segmentation."""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.backbone import Backbone
from detectron2.structures import BitMasks, ImageList

from mask2former.modeling.meta_arch.maskformer import (
    MaskFormer,
    build_criterion,
    normalized_batch,
    set_mask_classification_modules,
)

from .modeling.criterion import VideoSetCriterion
from .modeling.matcher import VideoHungarianMatcher
from .modeling.video_inference import WindowTracks, masks_at_output_size, top_pairs
from .utils.memory import retry_if_cuda_oom

__all__ = ["VideoMaskFormer"]

# The modules and settings read from the config as the image MaskFormer reads them.
_IMAGE_MODEL_ARGS = (
    "backbone", "sem_seg_head", "num_queries", "metadata", "size_divisibility", "pixel_mean",
    "pixel_std",
)


@META_ARCH_REGISTRY.register()
class VideoMaskFormer(nn.Module):
    """
    Mask2Former for video instance segmentation: backbone and pixel decoder per frame, a video
    transformer decoder whose queries predict one class and one mask tube (T, H, W) each over
    a clip, trained with a Hungarian-matched set loss on the tubes.

    Input: a list of video dicts, each with "image" (a list of T frames (C, H, W) in
    INPUT.FORMAT order) and, in training, "instances" (T Instances with gt_ids, gt_classes and
    gt_masks; the same objects in every frame, gt_id -1 where absent). Inference takes the
    whole clip at once, or, with ``window_size`` > 0, windows of frames whose queries are
    linked across windows (:mod:`~mask2former_video.modeling.video_inference`).

    Windowed inference keeps, per window, only the decoder's stride-4 mask logits of the Q
    queries, in float16 on the CPU (Q/80 of the bool output's bytes per frame: 1.25x for
    Q = 100), and the tracks' summed class probabilities; features exist for one window at a
    time, and the output masks are made a few frames at a time. With ``window_size`` >= T the
    result is the whole-clip inference exactly.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_queries: int,
        metadata,
        size_divisibility: int,
        pixel_mean: Tuple[float],
        pixel_std: Tuple[float],
        num_frames: int,
        window_size: int = 0,
        test_topk_per_video: int = 10,
    ):
        """
        Args:
            backbone, sem_seg_head, criterion: the modules.
            num_queries: number of queries Q.
            metadata: dataset metadata.
            size_divisibility: frames are padded to a multiple of this (< 0: the backbone's).
            pixel_mean, pixel_std: per-channel normalization of the input.
            num_frames: frames per training clip (``INPUT.SAMPLING_FRAME_NUM``).
            window_size: frames per window at inference; 0 runs the whole clip at once.
            test_topk_per_video: (query, class) pairs kept per video.
        """
        super().__init__()
        set_mask_classification_modules(
            self, backbone, sem_seg_head, criterion, num_queries, metadata, size_divisibility,
            pixel_mean, pixel_std,
        )
        if window_size < 0:
            raise ValueError(f"MODEL.MASK_FORMER.TEST.WINDOW_SIZE must be >= 0, got {window_size}")
        self.num_frames = num_frames
        self.window_size = window_size
        self.test_topk_per_video = test_topk_per_video

    @classmethod
    def from_config(cls, cfg):
        image_args = MaskFormer.from_config(cfg)
        num_classes = image_args["sem_seg_head"].num_classes
        return {
            **{name: image_args[name] for name in _IMAGE_MODEL_ARGS},
            "criterion": build_criterion(cfg, num_classes, VideoHungarianMatcher, VideoSetCriterion),
            "num_frames": cfg.INPUT.SAMPLING_FRAME_NUM,
            "window_size": cfg.MODEL.MASK_FORMER.TEST.WINDOW_SIZE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_frames(self, frames: Sequence[torch.Tensor], where: str) -> ImageList:
        """Normalize frames and pad them into one (N, C, H_pad, W_pad) batch."""
        return normalized_batch(self, frames, lambda i: f"{where} frame {i}")

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs: B video dicts (see the class doc); optional "height"/"width" give
                the output size.
        Returns:
            in training, a dict of weighted losses; in inference, one dict per video:
            {"image_size": (h, w), "pred_scores": list of floats, "pred_labels": list of ints
            (contiguous ids), "pred_masks": list of bool (T, h, w) tensors on the CPU}.
        """
        for i, video in enumerate(batched_inputs):
            frames = video.get("image")
            if not isinstance(frames, (list, tuple)) or len(frames) == 0:
                raise ValueError(
                    f"batched_inputs[{i}] (video {video.get('video_id', '?')}) has no frames: "
                    f"'image' must be a non-empty list of (C, H, W) tensors, got "
                    f"{type(frames).__name__ if frames is None else len(frames)}"
                )
        if self.training:
            return self.losses(batched_inputs)
        return [self.inference_video(video, f"batched_inputs[{i}]") for i, video in enumerate(batched_inputs)]

    def losses(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        frames = []
        for i, video in enumerate(batched_inputs):
            if len(video["image"]) != self.num_frames:
                raise ValueError(
                    f"batched_inputs[{i}] has {len(video['image'])} frames; training clips have "
                    f"INPUT.SAMPLING_FRAME_NUM = {self.num_frames}"
                )
            frames.extend(video["image"])
        images = self.preprocess_frames(frames, "training clip")
        outputs = self.sem_seg_head(self.backbone(images.tensor))
        losses = self.criterion(outputs, self.prepare_targets(batched_inputs, images))
        weights = self.criterion.weight_dict
        return {name: loss * weights[name] for name, loss in losses.items() if name in weights}

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """
        Per video {"labels": (N,), "ids": (N, T), "masks": (N, T, H_pad, W_pad) bool}: the
        objects present in at least one of its frames, masks zero-padded like the frames.
        """
        h_pad, w_pad = images.tensor.shape[-2:]
        targets = []
        for i, video in enumerate(batched_inputs):
            if "instances" not in video:
                raise KeyError(
                    f"batched_inputs[{i}] has no 'instances': training needs the video dataset "
                    "mapper's targets"
                )
            frames = [instances.to(self.device) for instances in video["instances"]]
            num_objects = {len(instances) for instances in frames}
            if len(frames) != len(video["image"]) or len(num_objects) != 1:
                raise ValueError(
                    f"batched_inputs[{i}]: 'instances' must list the same objects in each of the "
                    f"{len(video['image'])} frames, got {[len(x) for x in frames]} objects"
                )
            masks = torch.zeros(
                (num_objects.pop(), len(frames), h_pad, w_pad), dtype=torch.bool, device=self.device
            )
            for t, instances in enumerate(frames):
                frame_masks = instances.gt_masks
                if isinstance(frame_masks, BitMasks):
                    frame_masks = frame_masks.tensor
                masks[:, t, : frame_masks.shape[1], : frame_masks.shape[2]] = frame_masks
            ids = torch.stack([instances.gt_ids for instances in frames], dim=1)  # (N, T)
            present = (ids != -1).any(dim=1)
            targets.append(
                {"labels": frames[0].gt_classes[present], "ids": ids[present], "masks": masks[present]}
            )
        return targets

    def inference_video(self, video: Dict, where: str) -> Dict:
        """The outputs of one video (see :meth:`forward`), whole clip or in windows."""
        frames = video["image"]
        sizes = {tuple(frame.shape[-2:]) for frame in frames}
        if len(sizes) != 1:
            raise ValueError(
                f"{where}: the frames of video {video.get('video_id', '?')} differ in size "
                f"({sorted(sizes)}); all frames of a video must have the same size"
            )
        window = self.window_size if 0 < self.window_size < len(frames) else len(frames)
        tracks = WindowTracks(compact=window < len(frames))
        for start in range(0, len(frames), window):
            images = self.preprocess_frames(frames[start : start + window], where)
            outputs = self.sem_seg_head(self.backbone(images.tensor))
            tracks.add(outputs["pred_logits"][0], outputs["pred_masks"][0], outputs["pred_embeds"][0])
            del outputs
        image_size = tuple(images.image_sizes[0])
        output_size = (video.get("height", image_size[0]), video.get("width", image_size[1]))
        scores, labels, queries = top_pairs(tracks.scores(), self.test_topk_per_video)
        masks = retry_if_cuda_oom(masks_at_output_size)(
            tracks.mask_logits, queries, tuple(images.tensor.shape[-2:]), image_size, output_size
        )
        return {
            "image_size": output_size,
            "pred_scores": scores.tolist(),
            "pred_labels": labels.tolist(),
            "pred_masks": list(masks),
        }
