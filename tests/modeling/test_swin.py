"""Tests of the Swin Transformer backbone (mask2former/modeling/backbone/swin.py)."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from mask2former.config import add_maskformer2_config
from mask2former.modeling.backbone.swin import D2SwinTransformer
from mask2former.modeling.backbone.swin_blocks import (
    MASKED_LOGIT,
    DropPath,
    PatchEmbed,
    PatchMerging,
    SwinTransformerBlock,
    relative_position_index,
    shifted_window_attention_mask,
    window_partition,
    window_reverse,
)
from model_utils import official_state_dicts

torch.set_num_threads(1)

SWIN_T_CONFIG = "configs/coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml"


def swin_cfg(**overrides):
    """A config with the Swin backbone; ``overrides`` are MODEL.SWIN keys."""
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    for k, v in overrides.items():
        setattr(cfg.MODEL.SWIN, k, v)
    return cfg


# a 4-stage model small enough for fast CPU tests
SMALL = dict(EMBED_DIM=16, DEPTHS=[2, 2, 2, 2], NUM_HEADS=[1, 2, 2, 4], WINDOW_SIZE=4)


def small_model(**overrides) -> D2SwinTransformer:
    torch.manual_seed(0)
    return D2SwinTransformer(swin_cfg(**{**SMALL, **overrides}), ShapeSpec(channels=3))


def shape_str(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape)


def test_state_dict_matches_reference_swin_tiny():
    ref = official_state_dicts()[SWIN_T_CONFIG]
    expected = {k[len("backbone.") :]: v for k, v in ref.items() if k.startswith("backbone.")}
    with torch.device("meta"):
        model = build_backbone(swin_cfg())  # defaults are Swin-T
    got = {k: shape_str(v) for k, v in model.state_dict().items()}
    assert sorted(got) == sorted(expected)
    assert got == expected
    assert len(got) == 189
    assert "layers.3.downsample.reduction.weight" not in got


def key_templates(keys):
    return {re.sub(r"blocks\.\d+\.", "blocks.N.", k) for k in keys}


@pytest.mark.parametrize(
    "name, embed, depths, heads, window, pretrain",
    [
        ("small", 96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 224),
        ("base", 128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 384),
        ("large", 192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 384),
    ],
)
def test_variants_channels_and_shapes(name, embed, depths, heads, window, pretrain):
    cfg = swin_cfg(
        EMBED_DIM=embed,
        DEPTHS=depths,
        NUM_HEADS=heads,
        WINDOW_SIZE=window,
        PRETRAIN_IMG_SIZE=pretrain,
    )
    with torch.device("meta"):
        model = build_backbone(cfg)
        tiny = build_backbone(swin_cfg())
    shapes = model.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (embed, 4),
        "res3": (2 * embed, 8),
        "res4": (4 * embed, 16),
        "res5": (8 * embed, 32),
    }
    sd = model.state_dict()
    assert key_templates(sd) == key_templates(tiny.state_dict())
    for i, d in enumerate(depths):
        assert len(model.layers[i].blocks) == d
        attn = sd[f"layers.{i}.blocks.{d - 1}.attn.relative_position_bias_table"]
        assert tuple(attn.shape) == ((2 * window - 1) ** 2, heads[i])
        assert tuple(sd[f"layers.{i}.blocks.0.attn.relative_position_index"].shape) == (
            window**2,
            window**2,
        )
        assert tuple(sd[f"norm{i}.weight"].shape) == (embed * 2**i,)
    assert tuple(sd["patch_embed.proj.weight"].shape) == (embed, 3, 4, 4)
    assert tuple(sd["layers.2.downsample.reduction.weight"].shape) == (8 * embed, 16 * embed)


@pytest.mark.parametrize("size", [(1, 97, 131), (2, 64, 64)])
def test_output_shapes_swin_tiny(size):
    B, H, W = size
    torch.manual_seed(0)
    model = build_backbone(swin_cfg()).eval()
    assert model.size_divisibility == 32
    with torch.no_grad():
        out = model(torch.randn(B, 3, H, W))
    shapes = model.output_shape()
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for k, v in out.items():
        s = shapes[k]
        assert tuple(v.shape) == (B, s.channels, math.ceil(H / s.stride), math.ceil(W / s.stride))
        assert torch.isfinite(v).all()
    if (H, W) == (97, 131):
        assert [tuple(v.shape[-2:]) for v in out.values()] == [(25, 33), (13, 17), (7, 9), (4, 5)]
    # every stage output is layer-normed over channels (norm{i} starts as weight 1, bias 0)
    mean = out["res3"].mean(1)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)


def test_out_features_subset_and_bad_name():
    model = small_model(OUT_FEATURES=["res3", "res5"]).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 40, 36))
    assert list(out) == ["res3", "res5"]
    assert set(model.output_shape()) == {"res3", "res5"}
    with pytest.raises(ValueError, match="OUT_FEATURES.*res6"):
        small_model(OUT_FEATURES=["res2", "res6"])


def test_bad_input_shape_errors():
    model = small_model().eval()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(3, 32, 32\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 4, 32, 32\)"):
        model(torch.randn(1, 4, 32, 32))


def test_relative_position_index():
    ws = 3
    idx = relative_position_index(ws)
    assert idx.dtype == torch.int64 and tuple(idx.shape) == (9, 9)
    for i in range(9):
        for j in range(9):
            dy, dx = i // ws - j // ws, i % ws - j % ws
            assert idx[i, j] == (dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)
    assert idx.min() == 0 and idx.max() == (2 * ws - 1) ** 2 - 1
    assert (idx.diagonal() == (ws - 1) * (2 * ws - 1) + ws - 1).all()


def test_window_partition_and_reverse():
    x = torch.arange(2 * 8 * 12 * 3, dtype=torch.float32).view(2, 8, 12, 3)
    w = window_partition(x, 4)
    assert tuple(w.shape) == (2 * 2 * 3, 4, 4, 3)
    assert torch.equal(w[0], x[0, :4, :4])
    assert torch.equal(w[1], x[0, :4, 4:8])  # row-major window order
    assert torch.equal(w[3], x[0, 4:8, :4])
    assert torch.equal(w[6], x[1, :4, :4])
    assert torch.equal(window_reverse(w, 4, 8, 12), x)


def test_shifted_window_mask_values():
    ws, shift = 4, 2
    mask = shifted_window_attention_mask(8, 12, ws, shift)
    assert tuple(mask.shape) == (2 * 3, 16, 16)
    assert set(mask.unique().tolist()) == {0.0, MASKED_LOGIT}
    # windows away from the bottom/right border see one region only
    assert (mask[0] == 0).all() and (mask[1] == 0).all()
    # the bottom-right window holds 4 regions of sizes (2x2 each): 4 * 4^2 unmasked pairs
    last = mask[-1]
    assert (last == 0).sum() == 4 * 4**2
    assert torch.equal(last, last.T)
    # token (0, 0) and (0, 1) of that window come from the same region, (0, 0) and (0, 2) not
    assert last[0, 1] == 0 and last[0, 2] == MASKED_LOGIT and last[0, 8] == MASKED_LOGIT
    # the right-border, non-bottom window splits columns only: 2 regions of 8 tokens
    assert (mask[2] == 0).sum() == 2 * 8**2


def naive_block(blk: SwinTransformerBlock, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """
    Direct per-pixel evaluation of a (shifted-)window block: each pixel of the padded map attends
    to the pixels of its cell, cells being [s + k*ws, s + (k+1)*ws) per axis (in image
    coordinates; pixels before s form their own cell), with the bias of their 2-D offset.
    """
    ws, s = blk.window_size, blk.shift_size
    attn = blk.attn
    B, _, C = x.shape
    nh, hd = attn.num_heads, C // attn.num_heads
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    y = F.pad(blk.norm1(x).view(B, H, W, C), (0, 0, 0, Wp - W, 0, Hp - H)).view(B, Hp * Wp, C)
    q, k, v = attn.qkv(y).view(B, Hp * Wp, 3, nh, hd).permute(2, 0, 3, 1, 4)
    logits = (q * attn.scale) @ k.transpose(-2, -1)  # (B, nh, P, P)

    yy, xx = torch.meshgrid(torch.arange(Hp), torch.arange(Wp), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    cell = torch.div(yy - s, ws, rounding_mode="floor") * 1000 + torch.div(
        xx - s, ws, rounding_mode="floor"
    )
    same = cell[:, None] == cell[None, :]
    dy, dx = yy[:, None] - yy[None, :], xx[:, None] - xx[None, :]
    table_idx = ((dy + ws - 1) * (2 * ws - 1) + dx + ws - 1).clamp(0, (2 * ws - 1) ** 2 - 1)
    bias = attn.relative_position_bias_table[table_idx].permute(2, 0, 1)  # (nh, P, P)
    logits = (logits + bias).masked_fill(~same, float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, Hp, Wp, C)[:, :H, :W]
    x = x + attn.proj(out.reshape(B, H * W, C))
    return x + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("hw", [(8, 8), (10, 7)])
def test_block_matches_naive_window_attention(shift, hw):
    H, W = hw
    torch.manual_seed(0)
    blk = SwinTransformerBlock(dim=8, num_heads=2, window_size=4, shift_size=shift).eval()
    with torch.no_grad():  # non-trivial biases and norms
        for p in blk.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(2, H * W, 8)
    Hp, Wp = math.ceil(H / 4) * 4, math.ceil(W / 4) * 4
    mask = shifted_window_attention_mask(Hp, Wp, 4, 2)
    with torch.no_grad():
        got = blk(x, H, W, mask)
        expected = naive_block(blk, x, H, W)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if shift:
        # without the mask the wrapped-around regions would mix
        with torch.no_grad():
            unmasked = blk(x, H, W, torch.zeros_like(mask))
        assert (unmasked - expected).abs().max() > 1e-2


def test_shifted_block_is_local_to_its_cells():
    """Gradient of one output pixel is zero outside its shifted-window cell (ws=4, shift=2)."""
    torch.manual_seed(0)
    blk = SwinTransformerBlock(dim=8, num_heads=2, window_size=4, shift_size=2).eval()
    x = torch.randn(1, 64, 8, requires_grad=True)
    out = blk(x, 8, 8, shifted_window_attention_mask(8, 8, 4, 2))
    out[0, 0 * 8 + 7].sum().backward()  # pixel (0, 7): cell rows [0, 2) x cols [6, 8)
    g = x.grad[0].abs().sum(-1).view(8, 8)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[0:2, 6:8] = True
    assert (g[inside] > 0).all()
    assert g[~inside].max() < 1e-30


def test_patch_merging_order_and_odd_padding():
    torch.manual_seed(0)
    pm = PatchMerging(dim=2)
    x = torch.randn(1, 3 * 5, 2)
    out = pm(x, 3, 5)
    assert tuple(out.shape) == (1, 2 * 3, 4)
    g = F.pad(x.view(1, 3, 5, 2), (0, 0, 0, 1, 0, 1))  # (1, 4, 6, 2)
    cat = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], -1)
    expected = F.layer_norm(cat.view(1, 6, 8), (8,), pm.norm.weight, pm.norm.bias)
    expected = expected @ pm.reduction.weight.T
    torch.testing.assert_close(out, expected)


def test_patch_embed_pads_bottom_right_with_zeros():
    torch.manual_seed(0)
    pe = PatchEmbed(patch_size=4, in_chans=3, embed_dim=8, patch_norm=True)
    x = torch.randn(1, 3, 9, 14)
    out = pe(x)
    assert tuple(out.shape) == (1, 8, 3, 4)
    torch.testing.assert_close(out, pe(F.pad(x, (0, 2, 0, 3))))


def test_backward_and_determinism():
    model = small_model(DROP_PATH_RATE=0.3, APE=True, PRETRAIN_IMG_SIZE=64)
    assert tuple(model.absolute_pos_embed.shape) == (1, 16, 16, 16)
    x = torch.randn(2, 3, 45, 38)
    model.train()
    out = model(x)
    sum(v.square().mean() for v in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.absolute_pos_embed.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    for k in a:
        assert torch.equal(a[k], b[k])


def test_stochastic_depth_schedule():
    model = small_model(DROP_PATH_RATE=0.3)
    rates = [
        getattr(blk.drop_path, "drop_prob", 0.0) for layer in model.layers for blk in layer.blocks
    ]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 8))
    assert isinstance(model.layers[0].blocks[0].drop_path, torch.nn.Identity)


def test_drop_path():
    x = torch.ones(4000, 3)
    dp = DropPath(0.25)
    assert torch.equal(dp.eval()(x), x)
    torch.manual_seed(0)
    y = dp.train()(x)
    rows = y[:, 0]
    kept = torch.tensor(1 / 0.75)  # float32, as the output
    assert ((rows == 0) | (rows == kept)).all()
    assert (y == y[:, :1]).all()  # whole samples are dropped
    assert abs((rows == 0).float().mean().item() - 0.25) < 0.03


def test_init():
    model = build_backbone(swin_cfg())
    qkv = model.layers[2].blocks[3].attn.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 1e-3 and (qkv.bias == 0).all()
    assert (
        abs(model.layers[0].blocks[0].attn.relative_position_bias_table.std().item() - 0.02) < 3e-3
    )
    assert (model.norm2.weight == 1).all() and (model.norm2.bias == 0).all()
    assert (model.layers[1].downsample.norm.weight == 1).all()


def test_gradient_checkpointing_matches():
    x = torch.randn(1, 3, 37, 29)
    outs, grads = [], []
    for use_ckpt in (False, True):
        model = small_model(USE_CHECKPOINT=use_ckpt)
        out = model(x)
        sum(v.sum() for v in out.values()).backward()
        outs.append(out)
        grads.append(model.layers[1].blocks[1].attn.qkv.weight.grad)
    for k in outs[0]:
        torch.testing.assert_close(outs[0][k], outs[1][k])
    torch.testing.assert_close(grads[0], grads[1])
