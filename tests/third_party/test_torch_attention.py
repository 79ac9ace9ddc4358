"""PyTorch's attention behaviour that the transformer decoder works around: attention over no key
at all is NaN (seen through our CrossAttentionLayer, which hands its mask to
nn.MultiheadAttention as it is). The decoder's empty-mask rule (unmask_empty_queries, tested in
tests/modeling/test_transformer_decoder.py) exists for it."""
import torch

from mask2former.modeling.transformer_decoder.layers import CrossAttentionLayer


def test_cross_attention_all_masked_is_nan_without_rule():
    """Why the empty-mask rule exists: attention over no key at all is NaN."""
    layer = CrossAttentionLayer(8, 2).eval()
    tgt, memory = torch.randn(3, 1, 8), torch.randn(5, 1, 8)
    mask = torch.zeros(2, 3, 5, dtype=torch.bool)
    mask[:, 0] = True
    with torch.no_grad():
        out = layer(tgt, memory, memory_mask=mask)
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1:]).all()
