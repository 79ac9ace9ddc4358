"""Tests of the transformer decoders (Mask2Former's masked multi-scale one and MaskFormer's DETR one)."""
import math

import pytest
import torch
from torch.nn import functional as F

from mask2former.modeling.transformer_decoder import (
    TRANSFORMER_DECODER_REGISTRY,
    MultiScaleMaskedTransformerDecoder,
    PositionEmbeddingSine,
    StandardTransformerDecoder,
    build_transformer_decoder,
)
from mask2former.modeling.transformer_decoder.layers import MLP
from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    attention_mask_from_logits,
    unmask_empty_queries,
)
from model_utils import official_shape, official_state_dicts

HIDDEN, HEADS, QUERIES, CLASSES, IN_CH, MASK_DIM = 32, 4, 10, 5, 24, 16
# odd sizes, lowest resolution first
LEVEL_SIZES = [(3, 5), (5, 7), (9, 11)]
MASK_SIZE = (17, 21)


def _m2f(dec_layers=4, pre_norm=False, mask_classification=True, in_channels=IN_CH, seed=0):
    torch.manual_seed(seed)
    return MultiScaleMaskedTransformerDecoder(
        in_channels,
        mask_classification,
        num_classes=CLASSES,
        hidden_dim=HIDDEN,
        num_queries=QUERIES,
        nheads=HEADS,
        dim_feedforward=64,
        dec_layers=dec_layers,
        pre_norm=pre_norm,
        mask_dim=MASK_DIM,
        enforce_input_project=False,
    ).eval()


def _inputs(batch=2, in_channels=IN_CH, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(batch, in_channels, h, w, generator=g) for h, w in LEVEL_SIZES]
    mask_features = torch.randn(batch, MASK_DIM, *MASK_SIZE, generator=g)
    return x, mask_features


def _record_cross_attention(model):
    """Forward pre-hooks recording (memory, memory_mask) and outputs of each cross-attention layer."""
    calls, outputs = [], []

    def pre_hook(module, args, kwargs):
        calls.append((args[1], kwargs["memory_mask"]))

    def hook(module, args, kwargs, output):
        outputs.append(output)

    handles = []
    for layer in model.transformer_cross_attention_layers:
        handles.append(layer.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(layer.register_forward_hook(hook, with_kwargs=True))
    return calls, outputs, handles


# ---------------------------------------------------------------------------------------------
# PositionEmbeddingSine
# ---------------------------------------------------------------------------------------------


def test_position_embedding_hand_checked():
    # num_pos_feats=4: dim_t = [1, 1, 100, 100]; channels per axis: sin(e), cos(e), sin(e/100), cos(e/100)
    pe = PositionEmbeddingSine(num_pos_feats=4, temperature=10000, normalize=False)
    x = torch.zeros(1, 3, 2, 3)
    pos = pe(x)
    assert pos.shape == (1, 8, 2, 3) and pos.dtype == torch.float32

    def enc(e):
        return [math.sin(e), math.cos(e), math.sin(e / 100), math.cos(e / 100)]

    for i in range(2):
        for j in range(3):
            expected = enc(i + 1) + enc(j + 1)  # y channels first, then x
            assert torch.allclose(pos[0, :, i, j], torch.tensor(expected), atol=1e-6)


def test_position_embedding_normalized_with_padding():
    pe = PositionEmbeddingSine(num_pos_feats=2, normalize=True)  # dim_t = [1, 1]
    mask = torch.tensor([[[False, False, True], [True, True, True]]])  # (1, 2, 3), True = padding
    pos = pe(torch.zeros(1, 7, 2, 3), mask)
    assert pos.shape == (1, 4, 2, 3)
    eps, s = 1e-6, 2 * math.pi
    # x: cumsum of valid pixels per row, divided by the row's last value
    x_embed = [[1 / (2 + eps) * s, 2 / (2 + eps) * s, 2 / (2 + eps) * s], [0.0, 0.0, 0.0]]
    # y: cumsum down each column, divided by the column's last value
    y_embed = [[1 / (1 + eps) * s, 1 / (1 + eps) * s, 0.0], [1 / (1 + eps) * s, 1 / (1 + eps) * s, 0.0]]
    for i in range(2):
        for j in range(3):
            y, x = y_embed[i][j], x_embed[i][j]
            expected = torch.tensor([math.sin(y), math.cos(y), math.sin(x), math.cos(x)])
            assert torch.allclose(pos[0, :, i, j], expected, atol=1e-5), (i, j)


def test_position_embedding_no_mask_equals_all_valid_mask():
    pe = PositionEmbeddingSine(num_pos_feats=16, normalize=True)
    x = torch.randn(3, 5, 7, 9)
    a = pe(x, None)
    b = pe(x, torch.zeros(3, 7, 9, dtype=torch.bool))
    assert a.shape == (3, 32, 7, 9)
    assert torch.equal(a, b)


def test_position_embedding_errors():
    with pytest.raises(ValueError, match="normalize"):
        PositionEmbeddingSine(8, scale=1.0)
    with pytest.raises(ValueError, match="mask of shape"):
        PositionEmbeddingSine(8)(torch.zeros(1, 3, 4, 5), torch.zeros(1, 5, 4, dtype=torch.bool))


def test_mlp_structure():
    mlp = MLP(8, 16, 4, 3)
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(16, 8), (16, 16), (4, 16)]
    assert mlp(torch.randn(2, 5, 8)).shape == (2, 5, 4)


# ---------------------------------------------------------------------------------------------
# MultiScaleMaskedTransformerDecoder
# ---------------------------------------------------------------------------------------------


def compute_attention_mask(logits, size, num_heads):
    """The attention mask as the paper states it: resize the mask logits, binarise at 0.5."""
    resized = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return attention_mask_from_logits(resized, num_heads)


def test_m2f_output_shapes_and_aux():
    model = _m2f(dec_layers=4).train()  # dropout is 0: train mode computes the same values
    x, mf = _inputs()
    out = model(x, mf)
    assert out["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
    assert out["pred_masks"].shape == (2, QUERIES, *MASK_SIZE)
    # learnable-query prediction + layers 0..2
    assert len(out["aux_outputs"]) == 4
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
        assert aux["pred_masks"].shape == (2, QUERIES, *MASK_SIZE)
    assert all(torch.isfinite(t).all() for t in (out["pred_logits"], out["pred_masks"]))
    # inference: the same final prediction, without the intermediate ones
    model.eval()
    inference = model(x, mf)
    assert set(inference) == {"pred_logits", "pred_masks"}
    assert torch.equal(inference["pred_logits"], out["pred_logits"])
    assert torch.equal(inference["pred_masks"], out["pred_masks"])


def test_m2f_without_mask_classification_and_input_proj():
    model = _m2f(dec_layers=2, mask_classification=False, in_channels=HIDDEN).train()
    assert not hasattr(model, "class_embed")
    assert all(len(p) == 0 for p in model.input_proj)  # in_channels == hidden_dim: identity
    x, mf = _inputs(in_channels=HIDDEN)
    out = model(x, mf)
    assert set(out) == {"pred_masks", "aux_outputs"}
    assert [set(a) for a in out["aux_outputs"]] == [{"pred_masks"}] * 2


def test_m2f_requires_three_levels():
    model = _m2f(dec_layers=1)
    x, mf = _inputs()
    with pytest.raises(ValueError, match="3 feature levels, got 2"):
        model(x[:2], mf)


def _reference_forward(model, x, mask_features):
    """The decoder's forward written literally (head-repeated sigmoid threshold, torch.where)."""
    nheads = model.num_heads
    src, pos, size_list = [], [], []
    for i in range(3):
        size_list.append(x[i].shape[-2:])
        pos.append(model.pe_layer(x[i], None).flatten(2).permute(2, 0, 1))
        src.append(
            (model.input_proj[i](x[i]).flatten(2) + model.level_embed.weight[i][None, :, None]).permute(2, 0, 1)
        )
    bs = src[0].shape[1]
    query_embed = model.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
    output = model.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)

    def heads(output, size):
        dec = model.decoder_norm(output).transpose(0, 1)
        cls = model.class_embed(dec)
        m = torch.einsum("bqc,bchw->bqhw", model.mask_embed(dec), mask_features)
        a = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        a = (a.sigmoid().flatten(2).unsqueeze(1).repeat(1, nheads, 1, 1).flatten(0, 1) < 0.5).bool()
        return cls, m, a.detach()

    classes, masks = [], []
    cls, m, attn_mask = heads(output, size_list[0])
    classes.append(cls)
    masks.append(m)
    for i in range(model.num_layers):
        lvl = i % 3
        attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False
        output = model.transformer_cross_attention_layers[i](
            output, src[lvl], memory_mask=attn_mask, memory_key_padding_mask=None, pos=pos[lvl], query_pos=query_embed
        )
        output = model.transformer_self_attention_layers[i](output, tgt_mask=None, tgt_key_padding_mask=None, query_pos=query_embed)
        output = model.transformer_ffn_layers[i](output)
        cls, m, attn_mask = heads(output, size_list[(i + 1) % 3])
        classes.append(cls)
        masks.append(m)
    return classes, masks


@pytest.mark.parametrize("shift", [0.0, 4.0])
def test_m2f_matches_literal_forward(shift):
    """The cheaper attention masks (from mask features resized to each level, thresholded before
    the head repeat) give the paper's predictions: resize each layer's mask logits, threshold."""
    model = _m2f(dec_layers=5).train()
    x, mf = _inputs()
    if shift:
        # a strong constant component in the pixel embeddings: many queries get empty masks
        mf = mf + shift * torch.randn(1, MASK_DIM, 1, 1, generator=torch.Generator().manual_seed(3))
        first_logits = model.forward_prediction_heads(
            model.query_feat.weight.unsqueeze(1).repeat(1, 2, 1), mf, None
        )[1]
        first = F.interpolate(first_logits, size=LEVEL_SIZES[0], mode="bilinear", align_corners=False)
        empty = (first.sigmoid() < 0.5).flatten(2).all(-1)
        assert empty.any() and not empty.all()  # some, not all, queries empty
    with torch.no_grad():
        out = model(x, mf)
        classes, masks = _reference_forward(model, x, mf)
    got = out["aux_outputs"] + [{"pred_logits": out["pred_logits"], "pred_masks": out["pred_masks"]}]
    assert len(got) == len(classes) == 6
    for g, c, m in zip(got, classes, masks):
        # resizing features instead of logits only changes float rounding
        assert torch.allclose(g["pred_logits"], c, atol=1e-5)
        assert torch.allclose(g["pred_masks"], m, atol=1e-5)


def test_attention_mask_from_resized_features_equals_resized_logits():
    """Resizing and the per-query dot product commute: the decoder's attention masks equal the
    ones from resized full-resolution logits wherever the logit is not within rounding of 0."""
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(2, 30, 16, generator=g)  # (B, Q, C)
    features = torch.randn(2, 16, 64, 96, generator=g)  # (B, C, H, W)
    full = torch.einsum("bqc,bchw->bqhw", embed, features)
    for size in [(8, 12), (16, 24), (32, 48), (11, 17)]:
        resized_logits = F.interpolate(full, size=size, mode="bilinear", align_corners=False)
        resized_features = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
        from_features = torch.einsum("bqc,bchw->bqhw", embed, resized_features)
        assert torch.allclose(from_features, resized_logits, atol=1e-4)
        decided = resized_logits.abs().flatten(2) > 1e-4
        a = attention_mask_from_logits(from_features, 1)
        b = attention_mask_from_logits(resized_logits, 1)
        assert torch.equal(a[decided], b[decided])


def test_attention_mask_matches_literal_formula():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 7, 9) * 3
    # tiny negative logits: sigmoid rounds to exactly 0.5 there, so they are attended (not `< 0`)
    logits[0, 0, :2] = -1e-9
    logits[1, 2] = -5.0  # an empty query
    got = compute_attention_mask(logits, (4, 5), num_heads=3)
    a = F.interpolate(logits, size=(4, 5), mode="bilinear", align_corners=False)
    ref = (a.sigmoid().flatten(2).unsqueeze(1).repeat(1, 3, 1, 1).flatten(0, 1) < 0.5).bool()
    assert ref[3:6, 2].all()
    ref[torch.where(ref.sum(-1) == ref.shape[-1])] = False
    assert got.shape == (6, 6, 20) and got.dtype == torch.bool
    assert torch.equal(got, ref)
    assert torch.equal(unmask_empty_queries(got), got)
    assert not got[3:6, 2].any()  # image 1's empty query 2 attends everywhere, in every head


def test_m2f_empty_masks_attend_everywhere():
    model = _m2f(dec_layers=3)
    # every mask embedding is -1 and every pixel embedding +1: all masks are empty everywhere
    with torch.no_grad():
        model.mask_embed.layers[-1].weight.zero_()
        model.mask_embed.layers[-1].bias.fill_(-1.0)
    x, _ = _inputs()
    mf = torch.ones(2, MASK_DIM, *MASK_SIZE)
    calls, outputs, handles = _record_cross_attention(model)
    with torch.no_grad():
        out = model(x, mf)
    for h in handles:
        h.remove()
    assert torch.isfinite(out["pred_logits"]).all() and torch.isfinite(out["pred_masks"]).all()
    for (memory, memory_mask), output in zip(calls, outputs):
        assert not memory_mask.any()  # nothing masked
        assert torch.isfinite(output).all()
    # equal to unmasked attention
    layer0 = model.transformer_cross_attention_layers[0]
    pos0 = model.pe_layer(x[0], None).flatten(2).permute(2, 0, 1)
    query_embed = model.query_embed.weight.unsqueeze(1).repeat(1, 2, 1)
    with torch.no_grad():
        unmasked = layer0(
            model.query_feat.weight.unsqueeze(1).repeat(1, 2, 1), calls[0][0], memory_mask=None, pos=pos0, query_pos=query_embed
        )
    assert torch.allclose(outputs[0], unmasked, atol=1e-6)


def test_m2f_masked_attention_ignores_memory_outside_mask():
    model = _m2f(dec_layers=1)
    x, mf = _inputs(seed=5)
    with torch.no_grad():
        init = model.query_feat.weight.unsqueeze(1).repeat(1, 2, 1)
        level_features = F.interpolate(mf, size=LEVEL_SIZES[0], mode="bilinear", align_corners=False)
        attn_mask = model.forward_prediction_heads(init, mf, level_features)[2]  # (B*heads, Q, HW)
    outside = attn_mask[0, 0]  # image 0, head 0, query 0: True where query 0 does not look
    assert 0 < outside.sum() < outside.numel()

    x2 = [t.clone() for t in x]
    h, w = LEVEL_SIZES[0]
    perturbed = x2[0][0].reshape(IN_CH, h * w)
    perturbed[:, outside] += 10.0 * torch.randn(IN_CH, int(outside.sum()))
    x2[0][0] = perturbed.reshape(IN_CH, h, w)

    results = []
    for inp in (x, x2):
        _, outputs, handles = _record_cross_attention(model)
        with torch.no_grad():
            model(inp, mf)
        for hd in handles:
            hd.remove()
        results.append(outputs[0])  # (Q, B, C)
    a, b = results
    assert torch.allclose(a[0, 0], b[0, 0], atol=1e-5)  # query 0 of image 0: unchanged
    assert torch.equal(a[:, 1], b[:, 1])  # image 1 untouched
    assert (a[1:, 0] - b[1:, 0]).abs().max() > 1e-2  # other queries do see the perturbed pixels


def test_m2f_round_robin_over_levels():
    model = _m2f(dec_layers=7)
    x, mf = _inputs()
    calls, _, handles = _record_cross_attention(model)
    with torch.no_grad():
        model(x, mf)
    for h in handles:
        h.remove()
    hw = [h * w for h, w in LEVEL_SIZES]
    assert [memory.shape[0] for memory, _ in calls] == [hw[i % 3] for i in range(7)]
    assert [tuple(m.shape) for _, m in calls] == [(2 * HEADS, QUERIES, hw[i % 3]) for i in range(7)]


def test_m2f_gradients_reach_queries():
    model = _m2f(dec_layers=3).train()
    x, mf = _inputs()
    out = model(x, mf)
    loss = out["pred_logits"].sum() + out["pred_masks"].square().mean()
    for aux in out["aux_outputs"]:
        loss = loss + aux["pred_logits"].sum() + aux["pred_masks"].square().mean()
    loss.backward()
    for p in (model.query_feat.weight, model.query_embed.weight, model.level_embed.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_m2f_pre_norm_runs():
    model = _m2f(dec_layers=3, pre_norm=True).train()
    assert all(layer.normalize_before for layer in model.transformer_ffn_layers)
    x, mf = _inputs()
    out = model(x, mf)
    assert out["pred_masks"].shape == (2, QUERIES, *MASK_SIZE)
    assert torch.isfinite(out["pred_logits"]).all() and len(out["aux_outputs"]) == 3


# ---------------------------------------------------------------------------------------------
# building from config, checkpoint compatibility
# ---------------------------------------------------------------------------------------------


def _cfg(name="MultiScaleMaskedTransformerDecoder", num_classes=133, dec_layers=10):
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    from mask2former.config import add_maskformer2_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = name
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = dec_layers
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    return cfg


@pytest.mark.parametrize("config_path", list(official_state_dicts()))
def test_m2f_state_dict_matches_reference(config_path):
    reference = official_state_dicts()[config_path]
    prefix = "sem_seg_head.predictor."
    expected = {k[len(prefix):]: v for k, v in reference.items() if k.startswith(prefix)}
    # the reference models' classes: their classifier's rows, less "no object"
    num_classes = official_shape(config_path, prefix + "class_embed.weight")[0] - 1
    model = build_transformer_decoder(_cfg(num_classes=num_classes), 256, True)
    assert isinstance(model, MultiScaleMaskedTransformerDecoder)
    got = {k: "x".join(str(s) for s in v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(got) ^ set(expected)) == []
    assert got == expected


def test_build_errors():
    with pytest.raises(KeyError, match="unknown transformer decoder 'Nope'.*MultiScaleMaskedTransformerDecoder"):
        build_transformer_decoder(_cfg(name="Nope"), 256)
    with pytest.raises(AssertionError, match="DEC_LAYERS must be >= 1"):
        build_transformer_decoder(_cfg(dec_layers=0), 256)
    assert {"MultiScaleMaskedTransformerDecoder", "StandardTransformerDecoder"} <= {
        k for k, _ in TRANSFORMER_DECODER_REGISTRY
    }


def test_build_from_config_small():
    cfg = _cfg(num_classes=CLASSES, dec_layers=4)
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = HIDDEN
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = QUERIES
    cfg.MODEL.MASK_FORMER.NHEADS = HEADS
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 64
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = MASK_DIM
    model = build_transformer_decoder(cfg, IN_CH, True).train()
    assert model.num_layers == 3 and len(model.transformer_cross_attention_layers) == 3
    assert all(isinstance(p, torch.nn.Conv2d) for p in model.input_proj)
    x, mf = _inputs()
    out = model(x, mf)
    assert out["pred_logits"].shape == (2, QUERIES, CLASSES + 1) and len(out["aux_outputs"]) == 3


# ---------------------------------------------------------------------------------------------
# StandardTransformerDecoder (MaskFormer)
# ---------------------------------------------------------------------------------------------


def _standard(deep_supervision=True, pre_norm=False, enc_layers=1, dec_layers=3, mask_classification=True, seed=0):
    torch.manual_seed(seed)
    return StandardTransformerDecoder(
        IN_CH,
        mask_classification,
        num_classes=CLASSES,
        hidden_dim=HIDDEN,
        num_queries=QUERIES,
        nheads=HEADS,
        dropout=0.1,
        dim_feedforward=64,
        enc_layers=enc_layers,
        dec_layers=dec_layers,
        pre_norm=pre_norm,
        deep_supervision=deep_supervision,
        mask_dim=MASK_DIM,
        enforce_input_project=False,
    ).eval()


def test_standard_output_shapes_and_aux():
    model = _standard(deep_supervision=True, dec_layers=3)
    x = torch.randn(2, IN_CH, 5, 7)
    mf = torch.randn(2, MASK_DIM, *MASK_SIZE)
    out = model(x, mf)
    assert out["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
    assert out["pred_masks"].shape == (2, QUERIES, *MASK_SIZE)
    assert len(out["aux_outputs"]) == 2
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, QUERIES, CLASSES + 1)
        assert aux["pred_masks"].shape == (2, QUERIES, *MASK_SIZE)

    # without deep supervision: same final prediction, no aux outputs
    single = _standard(deep_supervision=False, dec_layers=3)
    single.load_state_dict(model.state_dict())
    out2 = single(x, mf)
    assert "aux_outputs" not in out2
    assert torch.allclose(out2["pred_masks"], out["pred_masks"], atol=1e-5)
    assert torch.allclose(out2["pred_logits"], out["pred_logits"], atol=1e-5)

    masks_only = _standard(mask_classification=False)
    out3 = masks_only(x, mf)
    assert set(out3) == {"pred_masks", "aux_outputs"} and set(out3["aux_outputs"][0]) == {"pred_masks"}


def test_standard_state_dict_names():
    post = set(_standard(pre_norm=False, enc_layers=2, dec_layers=2).state_dict())
    pre = set(_standard(pre_norm=True, enc_layers=2, dec_layers=2).state_dict())
    for keys in (post, pre):
        for name in ("self_attn.in_proj_weight", "linear1.weight", "linear2.weight", "norm1.weight", "norm2.weight"):
            assert f"transformer.encoder.layers.1.{name}" in keys
        for name in ("self_attn.in_proj_weight", "multihead_attn.out_proj.weight", "linear1.weight", "norm3.bias"):
            assert f"transformer.decoder.layers.1.{name}" in keys
        assert {"transformer.decoder.norm.weight", "query_embed.weight", "class_embed.weight",
                "mask_embed.layers.2.weight", "input_proj.weight"} <= keys
        assert not any(k.startswith("transformer.encoder.layers.2") for k in keys)
    assert "transformer.encoder.norm.weight" in pre and "transformer.encoder.norm.weight" not in post


def test_standard_padding_is_ignored():
    model = _standard(enc_layers=2, pre_norm=True)
    x = torch.randn(1, IN_CH, 6, 8)
    mf = torch.randn(1, MASK_DIM, *MASK_SIZE)
    mask = torch.zeros(1, 6, 8, dtype=torch.bool)
    mask[:, :, 6:] = True  # last two columns are padding
    x2 = x.clone()
    x2[..., 6:] += 10.0 * torch.randn(1, IN_CH, 6, 2)
    with torch.no_grad():
        a, b = model(x, mf, mask), model(x2, mf, mask)
        c = model(x2, mf)  # without the padding mask the change is seen
    assert torch.allclose(a["pred_logits"], b["pred_logits"], atol=1e-5)
    assert (a["pred_logits"] - c["pred_logits"]).abs().max() > 1e-3


def test_standard_build_from_config_and_gradients():
    cfg = _cfg(name="StandardTransformerDecoder", num_classes=CLASSES, dec_layers=2)
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = HIDDEN
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = QUERIES
    cfg.MODEL.MASK_FORMER.NHEADS = HEADS
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 64
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 1
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = MASK_DIM
    model = build_transformer_decoder(cfg, IN_CH, True)
    assert isinstance(model, StandardTransformerDecoder)
    assert len(model.transformer.encoder.layers) == 1 and len(model.transformer.decoder.layers) == 2
    out = model(torch.randn(2, IN_CH, 5, 7), torch.randn(2, MASK_DIM, 9, 11))
    assert len(out["aux_outputs"]) == 1
    (out["pred_logits"].sum() + out["pred_masks"].mean()).backward()
    assert model.query_embed.weight.grad.abs().sum() > 0
