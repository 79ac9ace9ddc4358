"""Instance boxes: the tight box of each predicted mask."""

import pytest
import torch

from detectron2.structures import BitMasks

from mask2former.modeling.postprocessing import (
    BlockwisePostProcessor,
    InferenceSettings,
    PlainPostProcessor,
    instances_from_query_masks,
    mask_boxes,
)

H, W = 10, 12


def _mask(*pixel_slices):
    """(H, W) bool, True on each (rows, cols) slice pair."""
    mask = torch.zeros(H, W, dtype=torch.bool)
    for rows, cols in pixel_slices:
        mask[rows, cols] = True
    return mask


# (mask, its box x0, y0, x1, y1): x1 / y1 one past the last column / row
HAND_MADE = [
    (_mask((slice(2, 5), slice(3, 9))), [3, 2, 9, 5]),  # rectangle inside
    (_mask((slice(1, 2), slice(1, 4)), (slice(6, 9), slice(8, 10))), [1, 1, 10, 9]),  # two parts
    (_mask((slice(3, 8), slice(5, 6)), (slice(7, 8), slice(5, 9))), [5, 3, 9, 8]),  # an L
    (_mask((slice(None), slice(None))), [0, 0, W, H]),  # the whole image
    (_mask((slice(7, None), slice(0, 2))), [0, 7, 2, H]),  # bottom-left corner
    (_mask((slice(0, 1), slice(0, W))), [0, 0, W, 1]),  # top row
    (_mask((slice(0, 1), slice(0, 1))), [0, 0, 1, 1]),  # single pixel, first
    (_mask((slice(H - 1, H), slice(W - 1, W))), [W - 1, H - 1, W, H]),  # single pixel, last
    (_mask((slice(4, 5), slice(6, 7))), [6, 4, 7, 5]),  # single pixel inside
    (_mask(), [0, 0, 0, 0]),  # empty
]


def test_boxes_equal_hand_made_mask_extents():
    masks = torch.stack([m for m, _ in HAND_MADE])
    boxes = mask_boxes(masks)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [box for _, box in HAND_MADE]


def _instances(binary_masks, instance_to_mask):
    n = len(instance_to_mask)
    return instances_from_query_masks(
        torch.linspace(0.9, 0.5, n), torch.arange(n), binary_masks,
        binary_masks.float() * 0.8 + 0.1, torch.tensor(instance_to_mask, dtype=torch.long),
    )


def test_instances_get_the_boxes_of_their_query_masks():
    masks = torch.stack([m for m, _ in HAND_MADE])
    # several instances share a query's mask; one mask is used by none
    instance_to_mask = [0, 0, 3, 6, 9, 9, 2, 7, 8, 1, 4, 5]
    instances = _instances(masks, instance_to_mask)
    assert instances.pred_boxes.tensor.tolist() == [HAND_MADE[i][1] for i in instance_to_mask]
    assert torch.equal(instances.pred_masks, masks[instance_to_mask].float())


def test_empty_masks_get_zero_boxes_without_error():
    empty = torch.zeros(3, H, W, dtype=torch.bool)
    instances = _instances(empty, [0, 1, 2, 1])
    assert torch.equal(instances.pred_boxes.tensor, torch.zeros(4, 4))
    assert torch.isfinite(instances.scores).all()
    none = _instances(torch.zeros(0, H, W, dtype=torch.bool), [])
    assert len(none) == 0 and none.pred_boxes.tensor.shape == (0, 4)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.02, 0.5])
def test_boxes_equal_bitmasks_boxes(density):
    g = torch.Generator().manual_seed(int(density * 1000))
    masks = torch.rand(40, 23, 31, generator=g) < density
    masks[0] = False
    want = BitMasks(masks).get_bounding_boxes().tensor
    assert torch.equal(mask_boxes(masks), want)
    # a view that is not contiguous (e.g. masks of some queries of a larger tensor)
    assert torch.equal(mask_boxes(masks[::3]), want[::3])


def test_both_postprocessors_give_the_masks_boxes():
    g = torch.Generator().manual_seed(0)
    num_classes, queries = 5, 8
    mask_cls = torch.randn(queries, num_classes + 1, generator=g)
    mask_pred = 4 * torch.randn(queries, 12, 16, generator=g)
    mask_pred[2] = -10.0  # a query whose mask is empty at every size
    mask_cls[2, 0] += 9.0  # and selected
    settings = InferenceSettings(False, False, True, 0.3, 0.2, 12)
    args = (mask_cls, mask_pred, (48, 64), (44, 60), (50, 70))
    results = [p(settings)(*args)["instances"] for p in (PlainPostProcessor, BlockwisePostProcessor)]
    for instances in results:
        boxes = instances.pred_boxes.tensor
        assert torch.equal(boxes, BitMasks(instances.pred_masks > 0.5).get_bounding_boxes().tensor)
        assert (boxes == 0).all(1).any() and (boxes[:, 2:] > boxes[:, :2]).all(1).any()
    assert torch.equal(results[0].pred_boxes.tensor, results[1].pred_boxes.tensor)
