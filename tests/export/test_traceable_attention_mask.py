"""The float attention masks of exported graphs: the decoder's boolean masks' values."""
import torch

from mask2former.export.traceable_attention_mask import additive_attention_mask, additive_attention_masks
from mask2former.modeling.transformer_decoder import mask2former_transformer_decoder as decoder_module

HEADS = 2


def logits_with_an_empty_query():
    logits = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    logits[0, 1] = -1.0  # an empty mask: that query attends everywhere
    logits[1, 2, 0, :2] = -1e-9  # sigmoid rounds to 0.5: attended
    return logits


def test_additive_mask_is_zero_where_attended_and_minus_inf_elsewhere():
    logits = logits_with_an_empty_query()
    blocked = decoder_module.attention_mask_from_logits(logits, HEADS)
    additive = additive_attention_mask(logits, HEADS)
    assert additive.shape == blocked.shape == (2 * HEADS, 3, 20) and additive.dtype == torch.float32
    assert torch.equal(additive == float("-inf"), blocked)
    assert torch.equal(additive[~blocked], torch.zeros(int((~blocked).sum())))
    assert not blocked[HEADS - 1, 1].any() and not blocked[HEADS, 2, :2].any()


def test_attention_gives_the_same_output_with_either_mask():
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(8, HEADS).eval()
    query, memory = torch.randn(3, 2, 8), torch.randn(20, 2, 8)
    logits = logits_with_an_empty_query()
    expected = attention(query, memory, memory, attn_mask=decoder_module.attention_mask_from_logits(logits, HEADS))[0]
    got = attention(query, memory, memory, attn_mask=additive_attention_mask(logits, HEADS))[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_context_swaps_the_decoder_function_and_restores_it():
    original = decoder_module.attention_mask_from_logits
    with additive_attention_masks():
        assert decoder_module.attention_mask_from_logits is additive_attention_mask
    assert decoder_module.attention_mask_from_logits is original
