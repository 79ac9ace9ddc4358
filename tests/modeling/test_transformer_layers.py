"""The shared pre/post-norm layer family against PyTorch's own transformer layers, which use the
same parameter names (self_attn, multihead_attn, linear1/2, norm1..3) and the same arithmetic."""
import pytest
import torch
from torch import nn

from mask2former.modeling.pixel_decoder.fpn import TransformerEncoderOnly
from mask2former.modeling.transformer_decoder.layers import (
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
)
from mask2former.modeling.transformer_decoder.transformer import (
    TransformerDecoderLayer,
    TransformerEncoderLayer,
)

D, HEADS, FF = 16, 4, 32


def _seq(length, seed):
    return torch.randn(length, 2, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pre_norm", [False, True])
def test_encoder_layer_equals_pytorch(pre_norm):
    torch.manual_seed(0)
    ours = TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, normalize_before=pre_norm).eval()
    theirs = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, norm_first=pre_norm).eval()
    # every parameter name of ours is one of PyTorch's: the checkpoint layouts are the same
    theirs.load_state_dict(ours.state_dict())
    src = _seq(7, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(src), theirs(src), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_decoder_layer_equals_pytorch(pre_norm):
    torch.manual_seed(0)
    ours = TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, normalize_before=pre_norm).eval()
    theirs = nn.TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, norm_first=pre_norm).eval()
    theirs.load_state_dict(ours.state_dict())
    tgt, memory = _seq(5, 1), _seq(9, 2)
    with torch.no_grad():
        torch.testing.assert_close(ours(tgt, memory), theirs(tgt, memory), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_mask2former_layers_chain_like_a_decoder_layer(pre_norm):
    """Mask2Former's one-sub-layer layers, chained self -> cross -> FFN, compute what one DETR
    decoder layer with the same weights computes."""
    torch.manual_seed(0)
    detr = TransformerDecoderLayer(D, HEADS, FF, dropout=0.0, normalize_before=pre_norm).eval()
    self_attn = SelfAttentionLayer(D, HEADS, normalize_before=pre_norm).eval()
    cross = CrossAttentionLayer(D, HEADS, normalize_before=pre_norm).eval()
    ffn = FFNLayer(D, FF, normalize_before=pre_norm).eval()
    sd = detr.state_dict()

    def weights(prefixes, norm):
        own = {k: v for k, v in sd.items() if k.startswith(prefixes)}
        return {**own, "norm.weight": sd[norm + ".weight"], "norm.bias": sd[norm + ".bias"]}

    self_attn.load_state_dict(weights("self_attn.", "norm1"))
    cross.load_state_dict(weights("multihead_attn.", "norm2"))
    ffn.load_state_dict(weights(("linear1.", "linear2."), "norm3"))
    tgt, memory, pos, query_pos = _seq(5, 1), _seq(9, 2), _seq(9, 3), _seq(5, 4)
    with torch.no_grad():
        expected = detr(tgt, memory, pos=pos, query_pos=query_pos)
        got = ffn(cross(self_attn(tgt, query_pos=query_pos), memory, pos=pos, query_pos=query_pos))
    assert torch.equal(got, expected)


def test_layers_have_no_activation_option():
    with pytest.raises(TypeError):
        FFNLayer(D, FF, activation="gelu")


@pytest.mark.parametrize("pre_norm", [False, True])
def test_transformer_encoder_only(pre_norm):
    torch.manual_seed(0)
    model = TransformerEncoderOnly(D, HEADS, num_encoder_layers=2, dim_feedforward=FF, dropout=0.0,
                                   normalize_before=pre_norm).eval()
    names = set(model.state_dict())
    assert "encoder.layers.1.self_attn.in_proj_weight" in names
    # the final norm exists only with pre-norm layers
    assert ("encoder.norm.weight" in names) == pre_norm
    src = torch.randn(2, D, 3, 4)
    pos = torch.randn(2, D, 3, 4)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[1, :, 3] = True
    with torch.no_grad():
        out = model(src, mask, pos)
        # by hand: the layers over the (HW, B, C) sequence, back to (B, C, H, W)
        x = src.flatten(2).permute(2, 0, 1)
        for layer in model.encoder.layers:
            x = layer(x, src_key_padding_mask=mask.flatten(1), pos=pos.flatten(2).permute(2, 0, 1))
        if pre_norm:
            x = model.encoder.norm(x)
    assert out.shape == (2, D, 3, 4)
    assert torch.equal(out, x.permute(1, 2, 0).reshape(2, D, 3, 4))
