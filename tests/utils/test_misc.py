"""mask2former.utils.misc: the original implementation's NestedTensor helpers."""

import pytest
import torch

from mask2former.utils.misc import (
    NestedTensor,
    is_dist_avail_and_initialized,
    nested_tensor_from_tensor_list,
)


def test_nested_tensor_pads_bottom_right_and_masks_padding():
    a = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4) + 1
    b = torch.full((2, 5, 2), 7.0)
    nested = nested_tensor_from_tensor_list([a, b])
    tensors, mask = nested.decompose()
    assert tensors.shape == (2, 2, 5, 4) and mask.shape == (2, 5, 4) and mask.dtype == torch.bool
    assert torch.equal(tensors[0, :, :3, :4], a) and torch.equal(tensors[1, :, :5, :2], b)
    assert tensors[0, :, 3:].abs().sum() == 0 and tensors[1, :, :, 2:].abs().sum() == 0
    assert mask[0].sum() == 5 * 4 - 3 * 4 and not mask[0, :3, :4].any() and mask[0, 3:].all()
    assert mask[1].sum() == 5 * 4 - 5 * 2 and not mask[1, :, :2].any() and mask[1, :, 2:].all()


def test_nested_tensor_to_and_repr():
    t, m = torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool)
    moved = NestedTensor(t, m).to("cpu")
    assert isinstance(moved, NestedTensor) and torch.equal(moved.tensors, t)
    assert torch.equal(moved.mask, m) and NestedTensor(t, None).to("cpu").mask is None
    assert repr(moved) == str(t)


def test_bad_input_and_distributed_flag():
    with pytest.raises(ValueError, match=r"tensor 1 has shape \(2, 2\)"):
        nested_tensor_from_tensor_list([torch.zeros(1, 2, 2), torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="empty"):
        nested_tensor_from_tensor_list([])
    assert is_dist_avail_and_initialized() is False
