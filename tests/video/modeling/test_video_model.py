"""VideoMaskFormer: state-dict layout, training losses, inference output, windowed inference,
initialisation from an image checkpoint, bad input."""
import json
import logging
import os

import pytest
import torch

from detectron2.modeling import build_model

from mask2former.checkpoint import Mask2FormerCheckpointer
from mask2former_video.modeling.video_inference import link_queries
from model_utils import REFERENCE, load_cfg, tiny_opts
from video_model_utils import (
    load_video_cfg,
    random_clip,
    tiny_video_model,
    training_video,
)

with open(os.path.join(REFERENCE, "official_video_state_dict_keys.json")) as f:
    OFFICIAL = json.load(f)["models"]


@pytest.fixture(scope="module")
def model():
    return tiny_video_model()


@pytest.mark.parametrize("config_path", sorted(OFFICIAL))
def test_state_dict_matches_reference(config_path):
    with torch.device("meta"):
        net = build_model(load_video_cfg(config_path, ["MODEL.DEVICE", "meta"]))
    ours = {k: "x".join(str(s) for s in v.shape) for k, v in net.state_dict().items()}
    assert ours == OFFICIAL[config_path]


def test_training_losses_and_backward(model):
    model.train()
    try:
        torch.manual_seed(0)
        losses = model([training_video(2, 64, 96, seed=0), training_video(2, 64, 96, seed=1)])
        # 3 losses for the last layer and each of the DEC_LAYERS - 1 = 3 earlier predictions
        names = {"loss_ce", "loss_mask", "loss_dice"}
        assert set(losses) == names | {f"{n}_{i}" for n in names for i in range(3)}
        assert all(torch.isfinite(v) and v > 0 for v in losses.values())
        model.zero_grad()
        sum(losses.values()).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert grads["sem_seg_head.predictor.class_embed.weight"].abs().sum() > 0
        assert grads["backbone.stem.conv1.weight"].abs().sum() > 0
    finally:
        model.eval()


def test_losses_are_weighted_like_the_image_model(model):
    model.train()
    try:
        videos = [training_video(2, 64, 64)]
        torch.manual_seed(1)
        weighted = model(videos)
        images = model.preprocess_frames(videos[0]["image"], "clip")
        torch.manual_seed(1)
        outputs = model.sem_seg_head(model.backbone(images.tensor))
        raw = model.criterion(outputs, model.prepare_targets(videos, images))
    finally:
        model.eval()
    for name, weight in (("loss_ce", 2.0), ("loss_mask", 5.0), ("loss_dice", 5.0)):
        torch.testing.assert_close(weighted[name], raw[name] * weight)


def test_targets_keep_objects_present_in_some_frame(model):
    video = training_video(3, 40, 50)
    video["instances"][0].gt_ids[2] = -1  # object 3: absent from frame 0 ...
    video["instances"][1].gt_ids[2] = -1
    video["instances"][2].gt_ids[2] = -1  # ... and from every other frame: dropped
    images = model.preprocess_frames(video["image"], "clip")
    (target,) = model.prepare_targets([video], images)
    assert target["labels"].tolist() == [0, 3]
    assert target["masks"].shape == (2, 3, 64, 64) and target["masks"].dtype == torch.bool
    assert not target["masks"][1, 0].any() and target["masks"][1, 1].any()  # absent in frame 0
    assert not target["masks"][:, :, 40:].any() and not target["masks"][:, :, :, 50:].any()
    assert target["ids"].tolist() == [[1, 1, 1], [-1, 2, 2]]


def _infer(model, frames, window_size=0, **extra):
    model.window_size = window_size
    try:
        with torch.no_grad():
            return model([{"image": frames, **extra}])[0]
    finally:
        model.window_size = 0


def test_inference_output_format(model):
    out = _infer(model, random_clip(3, 64, 96), height=50, width=70)
    assert set(out) == {"image_size", "pred_scores", "pred_labels", "pred_masks"}
    assert out["image_size"] == (50, 70)
    assert len(out["pred_scores"]) == len(out["pred_labels"]) == len(out["pred_masks"]) == 10
    assert all(isinstance(s, float) and 0 <= s <= 1 for s in out["pred_scores"])
    assert out["pred_scores"] == sorted(out["pred_scores"], reverse=True)
    assert all(isinstance(c, int) and 0 <= c < 5 for c in out["pred_labels"])
    for mask in out["pred_masks"]:
        assert mask.shape == (3, 50, 70) and mask.dtype == torch.bool and mask.device.type == "cpu"
    # without "height"/"width": the frame size
    assert _infer(model, random_clip(2, 64, 96))["pred_masks"][0].shape == (2, 64, 96)


def test_inference_top_pairs_and_masks_follow_the_definition(model):
    """Scores: the top 10 of the flattened (query, class) softmax; masks: the query's tube
    resized to the padded size, cropped, resized to the output size, > 0."""
    frames = random_clip(2, 60, 90)  # padded to 64 x 96
    with torch.no_grad():
        images = model.preprocess_frames(frames, "clip")
        outputs = model.sem_seg_head(model.backbone(images.tensor))
    probs = outputs["pred_logits"][0].softmax(-1)[:, :-1]
    top, index = probs.flatten().topk(10)
    out = _infer(model, frames, height=45, width=70)
    torch.testing.assert_close(torch.tensor(out["pred_scores"]), top)
    assert out["pred_labels"] == (index % 5).tolist()
    tube = outputs["pred_masks"][0, index[0] // 5]  # (T, h, w)
    tube = torch.nn.functional.interpolate(tube[None], size=(64, 96), mode="bilinear", align_corners=False)
    tube = torch.nn.functional.interpolate(tube[:, :, :60, :90], size=(45, 70), mode="bilinear", align_corners=False)
    assert torch.equal(out["pred_masks"][0], tube[0] > 0)


@pytest.mark.parametrize("window_size", [5, 8])
def test_windowed_equals_whole_clip_when_the_window_covers_it(model, window_size):
    frames = random_clip(5, 64, 64, seed=3)
    whole = _infer(model, frames, height=40, width=40)
    windowed = _infer(model, frames, window_size, height=40, width=40)
    assert windowed["pred_scores"] == whole["pred_scores"]
    assert windowed["pred_labels"] == whole["pred_labels"]
    assert all(torch.equal(a, b) for a, b in zip(windowed["pred_masks"], whole["pred_masks"]))


def test_windowed_long_clip_links_windows(model):
    """A static clip of 3 windows: every window predicts the same queries, linked to themselves,
    so the averaged scores are those of one window, and every window's frames get masks."""
    frame = random_clip(1, 64, 64, seed=4)[0]
    one_window = _infer(model, [frame] * 3)
    windowed = _infer(model, [frame] * 8, window_size=3)
    assert windowed["pred_labels"] == one_window["pred_labels"]
    torch.testing.assert_close(
        torch.tensor(windowed["pred_scores"]), torch.tensor(one_window["pred_scores"]), atol=1e-4, rtol=0
    )
    for mask, reference in zip(windowed["pred_masks"], one_window["pred_masks"]):
        assert mask.shape == (8, 64, 64)
        # float16 storage of the windows' logits: equal but for pixels at a logit of ~0
        assert (mask != reference[:1]).float().mean() < 0.01


def test_link_queries_recovers_a_permutation():
    g = torch.Generator().manual_seed(0)
    previous = torch.randn(7, 16, generator=g)
    perm = torch.randperm(7, generator=g)
    current = previous[perm] * 3 + 0.01 * torch.randn(7, 16, generator=g)
    order = link_queries(previous, current)
    assert torch.equal(perm[order], torch.arange(7))  # current[order[i]] continues track i


def test_empty_video_and_mixed_frame_sizes_fail_clearly(model):
    with pytest.raises(ValueError, match="video 7.* has no frames"):
        model([{"image": [], "video_id": 7}])
    with pytest.raises(ValueError, match="differ in size"):
        _infer(model, [*random_clip(1, 64, 64), *random_clip(1, 64, 96)])
    model.train()
    try:
        with pytest.raises(ValueError, match="SAMPLING_FRAME_NUM"):
            model([training_video(3, 32, 32)])
    finally:
        model.eval()


def test_image_instance_checkpoint_initialises_the_video_model(tmp_path, caplog):
    """A COCO-instance-style image checkpoint (80 classes) initialises a 5-class video model:
    everything but the class head (skipped, with a log naming it) is loaded."""
    torch.manual_seed(5)
    image_model = build_model(
        load_cfg("configs/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml", tiny_opts(80))
    )
    path = tmp_path / "model_final.pth"
    torch.save({"model": image_model.state_dict()}, path)
    video_model = tiny_video_model(seed=6)
    # fvcore's logger, which may not propagate once detectron2's setup_logger has run
    logger = logging.getLogger("fvcore.common.checkpoint")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            Mask2FormerCheckpointer(video_model).load(str(path), checkpointables=[], match="init")
    finally:
        logger.removeHandler(caplog.handler)
    assert "Skip loading parameter 'sem_seg_head.predictor.class_embed.weight'" in caplog.text
    image_state = image_model.state_dict()
    skipped = []
    for key, value in video_model.state_dict().items():
        if value.shape != image_state[key].shape:
            skipped.append(key)
        else:
            assert torch.equal(value, image_state[key]), key
    assert sorted(skipped) == [
        "criterion.empty_weight",
        "sem_seg_head.predictor.class_embed.bias",
        "sem_seg_head.predictor.class_embed.weight",
    ]
