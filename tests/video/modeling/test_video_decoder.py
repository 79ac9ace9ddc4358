"""VideoMultiScaleMaskedTransformerDecoder: the memory over (t, h, w), mask tubes, and the
attention masks against their direct computation from the per-frame mask logits."""
import pytest
import torch
import torch.nn.functional as F

from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
    _resize_maps,
    attention_mask_from_logits,
)
from mask2former_video.modeling.transformer_decoder.video_mask2former_transformer_decoder import (
    VideoMultiScaleMaskedTransformerDecoder,
)

ARGS = dict(
    in_channels=16, num_classes=3, hidden_dim=16, num_queries=5, nheads=2, dim_feedforward=32,
    dec_layers=3, pre_norm=False, mask_dim=8, enforce_input_project=False,
)


@pytest.fixture
def decoder():
    torch.manual_seed(0)
    return VideoMultiScaleMaskedTransformerDecoder(num_frames=2, **ARGS).eval()


def _features(num_images, sizes=((2, 3), (4, 5), (6, 7)), mask_size=(12, 14), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(num_images, 16, *s, generator=g) for s in sizes]
    return x, torch.randn(num_images, 8, *mask_size, generator=g)


def test_same_parameters_as_the_image_decoder(decoder):
    torch.manual_seed(0)
    image = MultiScaleMaskedTransformerDecoder(**ARGS)
    ours = {k: v.shape for k, v in decoder.state_dict().items()}
    assert ours == {k: v.shape for k, v in image.state_dict().items()}


def test_output_shapes_in_training_and_inference(decoder):
    decoder.train()
    x, mask_features = _features(6)  # B = 3 clips of T = 2 frames
    out = decoder(x, mask_features)
    assert out["pred_logits"].shape == (3, 5, 4)
    assert out["pred_masks"].shape == (3, 5, 2, 12, 14)
    assert len(out["aux_outputs"]) == 3
    assert all(a["pred_masks"].shape == (3, 5, 2, 12, 14) for a in out["aux_outputs"])
    decoder.eval()
    x, mask_features = _features(7)  # inference: one clip of all 7 frames
    out = decoder(x, mask_features)
    assert out["pred_masks"].shape == (1, 5, 7, 12, 14)
    assert out["pred_embeds"].shape == (1, 5, 16)
    assert "aux_outputs" not in out


def test_training_batch_must_be_whole_clips(decoder):
    decoder.train()
    x, mask_features = _features(5)
    with pytest.raises(ValueError, match="SAMPLING_FRAME_NUM"):
        decoder(x, mask_features)


def test_memory_is_each_clips_frames_in_t_h_w_order(decoder):
    decoder.train()
    flat = torch.randn(6, 4, 10)  # (B*T, C, HW), B = 3, T = 2
    sequence = decoder.memory_sequence(flat)
    assert sequence.shape == (20, 3, 4)
    for b in range(3):
        for t in range(2):
            assert torch.equal(sequence[t * 10 : (t + 1) * 10, b], flat[b * 2 + t].T)


def test_mask_tubes_are_the_dot_products_per_frame(decoder):
    embed = torch.randn(2, 5, 8)
    features = torch.randn(6, 8, 4, 3)  # B = 2 clips of T = 3 frames
    tubes = decoder.mask_logits(embed, features)
    assert tubes.shape == (2, 5, 3, 4, 3)
    direct = torch.einsum("qc,chw->qhw", embed[1], features[3 + 2])
    torch.testing.assert_close(tubes[1, :, 2], direct)


def test_attention_masks_equal_the_direct_computation(decoder):
    """The decoder's attention masks (mask features resized to the level, then the dot product)
    against their definition: each frame's full-resolution mask logits resized bilinearly to the
    level, sigmoid < 0.5, flattened over (t, h, w), repeated per head; empty queries attend
    everywhere."""
    g = torch.Generator().manual_seed(3)
    mask_features = torch.rand(4, 8, 24, 20, generator=g)  # one clip of 4 frames, >= 0
    embed = torch.randn(1, 5, 8, generator=g)
    embed[0, 1] = -1.0  # query 1: negative logits everywhere, an empty tube
    level = (6, 5)
    attn_mask = attention_mask_from_logits(
        decoder.mask_logits(embed, _resize_maps(mask_features, level)), decoder.num_heads
    )
    tubes = decoder.mask_logits(embed, mask_features)  # (1, Q, T, H, W)
    resized = F.interpolate(tubes[0], size=level, mode="bilinear", align_corners=False)  # (Q, T, h, w)
    direct = resized.sigmoid().flatten(1) < 0.5  # (Q, T*h*w)
    assert bool(direct[1].all())
    direct[direct.all(dim=-1)] = False
    direct = direct[None].repeat(2, 1, 1)  # per head
    assert attn_mask.shape == direct.shape == (2, 5, 4 * 6 * 5)
    logits = resized.flatten(1)[None].repeat(2, 1, 1)
    differ = attn_mask != direct
    # equal up to float rounding: only where the logit is ~0 may the two disagree
    assert int(differ.sum()) <= 2 and bool((logits[differ].abs() < 1e-4).all())
    assert not attn_mask[:, 1].any()


def test_prediction_heads_give_tubes_and_attention_masks(decoder):
    queries = torch.randn(5, 1, 16)
    _, mask_features = _features(3, mask_size=(12, 10))
    classes, tubes, attn_mask = decoder.forward_prediction_heads(
        queries, mask_features, _resize_maps(mask_features, (3, 2))
    )
    assert classes.shape == (1, 5, 4) and tubes.shape == (1, 5, 3, 12, 10)
    assert attn_mask.shape == (2, 5, 3 * 3 * 2) and attn_mask.dtype == torch.bool
