"""The float attention masks of exported graphs: the decoder's boolean masks' values."""
import torch
from detectron2.modeling import build_model

from mask2former.export.exporter import traceable_modules
from mask2former.modeling.pixel_decoder.ops.modules import MSDeformAttn
from mask2former.modeling.transformer_decoder import mask2former_transformer_decoder as decoder_module
from mask2former.modeling.transformer_decoder.layers import CrossAttentionLayer
from model_utils import load_cfg, tiny_opts

HEADS = 2


def logits_with_an_empty_query():
    logits = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    logits[0, 1] = -1.0  # an empty mask: that query attends everywhere
    logits[1, 2, 0, :2] = -1e-9  # sigmoid rounds to 0.5: attended
    return logits


def additive_attention_mask(logits, heads):
    return decoder_module.attention_mask_from_logits(logits, heads, additive=True)


def test_additive_mask_is_zero_where_attended_and_lowest_elsewhere_once_per_image():
    logits = logits_with_an_empty_query()
    blocked = decoder_module.attention_mask_from_logits(logits, HEADS)
    additive = additive_attention_mask(logits, HEADS)
    assert blocked.shape == (2 * HEADS, 3, 20)
    assert additive.shape == (2, 1, 3, 20) and additive.dtype == torch.float32
    per_head = additive.expand(2, HEADS, 3, 20).flatten(0, 1)
    assert torch.equal(per_head == torch.finfo(torch.float32).min, blocked)
    assert torch.equal(per_head[~blocked], torch.zeros(int((~blocked).sum())))
    assert not blocked[HEADS - 1, 1].any() and not blocked[HEADS, 2, :2].any()


def test_cross_attention_gives_the_same_output_with_either_mask():
    """nn.MultiheadAttention with the boolean per-head mask, and the exported graphs' attention
    with the additive mask broadcast over the heads."""
    torch.manual_seed(0)
    layer = CrossAttentionLayer(8, HEADS).eval()
    query, memory = torch.randn(3, 2, 8), torch.randn(20, 2, 8)
    pos, query_pos = torch.randn(20, 2, 8), torch.randn(3, 2, 8)
    logits = logits_with_an_empty_query()
    expected = layer(query, memory, decoder_module.attention_mask_from_logits(logits, HEADS), pos=pos,
                     query_pos=query_pos)
    got = layer(query, memory, additive_attention_mask(logits, HEADS), pos=pos, query_pos=query_pos)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_context_makes_the_decoder_and_the_deformable_attention_traceable_and_restores_them():
    cfg = load_cfg("configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml", tiny_opts())
    model = build_model(cfg).eval()
    decoder = model.sem_seg_head.predictor
    attention = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    assert isinstance(decoder, decoder_module.MultiScaleMaskedTransformerDecoder) and attention
    with traceable_modules(model):
        assert decoder.traceable and all(m.traceable for m in attention)
    assert not decoder.traceable and not any(m.traceable for m in attention)
