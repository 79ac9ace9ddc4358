"""The training path's shortcuts compute exactly what the literal computation does."""
import pytest
import torch

from mask2former.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", [(2, 12, 12), (1, 25, 17), (3, 1, 7)])
def test_unpadded_position_encoding_is_the_all_valid_mask_encoding(normalize, shape):
    batch, h, w = shape
    pe = PositionEmbeddingSine(16, normalize=normalize)
    out = pe(torch.zeros(batch, 3, h, w))
    literal = pe(torch.zeros(batch, 3, h, w), torch.zeros(shape, dtype=torch.bool))
    assert out.is_contiguous() and out.shape == (batch, 32, h, w)
    assert torch.equal(out, literal)
