"""PositionEmbeddingSine3D against a direct computation of video_model.md's formula."""
import math

import numpy as np
import pytest
import torch

from mask2former_video.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine3D


def _sines(position: float, num_feats: int) -> np.ndarray:
    i = np.arange(num_feats)
    angle = position / 10000.0 ** (2 * (i // 2) / num_feats)
    return np.where(i % 2 == 0, np.sin(angle), np.cos(angle))


def _direct(t_len: int, h: int, w: int, num_pos_feats: int) -> np.ndarray:
    """(T, 2*num_pos_feats, H, W): concat(pos_y, pos_x) + pos_t, positions normalised to 2*pi."""
    eps, scale = 1e-6, 2 * math.pi
    out = np.zeros((t_len, 2 * num_pos_feats, h, w))
    for t in range(t_len):
        pos_t = _sines((t + 1) / (t_len + eps) * scale, 2 * num_pos_feats)
        for y in range(h):
            pos_y = _sines((y + 1) / (h + eps) * scale, num_pos_feats)
            for x in range(w):
                pos_x = _sines((x + 1) / (w + eps) * scale, num_pos_feats)
                out[t, :, y, x] = np.concatenate([pos_y, pos_x]) + pos_t
    return out


@pytest.mark.parametrize("t_len,h,w", [(1, 3, 4), (3, 5, 2), (4, 2, 6)])
def test_equals_the_formula(t_len, h, w):
    encoding = PositionEmbeddingSine3D(8, normalize=True)
    pos = encoding(torch.zeros(2, t_len, 5, h, w))
    assert pos.shape == (2, t_len, 16, h, w) and pos.dtype == torch.float32
    expected = torch.from_numpy(_direct(t_len, h, w, 8)).float()
    torch.testing.assert_close(pos[0], expected, atol=1e-5, rtol=0)
    assert torch.equal(pos[0], pos[1])


def test_time_features_are_added_not_concatenated():
    encoding = PositionEmbeddingSine3D(4, normalize=True)
    pos = encoding(torch.zeros(1, 3, 1, 2, 2))[0]
    # the spatial part is the same in every frame; frames differ by the time features only
    diff = pos[1] - pos[0]
    assert diff.abs().max() > 0.1
    torch.testing.assert_close(diff, diff[:, :1, :1].expand_as(diff), atol=1e-6, rtol=0)


def test_padding_mask_and_bad_input():
    encoding = PositionEmbeddingSine3D(4, normalize=True)
    x = torch.zeros(1, 2, 3, 4, 5)
    no_padding = torch.zeros(1, 2, 4, 5, dtype=torch.bool)
    assert torch.equal(encoding(x, no_padding), encoding(x))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        encoding(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="mask of shape"):
        encoding(x, torch.zeros(1, 4, 5, dtype=torch.bool))
