"""query_mask_outputs: detectron2's resize chain (to the padded size, crop, to the output size)
of every query's mask logits, as one linear map per axis applied a block of output rows at a
time, equals the literal chain up to float rounding, and never builds full-resolution maps of
every query."""
import pytest
import torch
from torch.nn import functional as F

from detectron2.modeling.postprocessing import sem_seg_postprocess

from mask2former.modeling.mask_resize import query_mask_outputs, resize_matrix
from model_utils import LargestTensor

# (low-res size, padded size or None, image size, output size)
CHAINS = [
    ((16, 24), (64, 96), (64, 96), (64, 96)),  # upsample only
    ((16, 24), (64, 96), (50, 70), (75, 61)),  # upsample, crop, resize up and down
    ((20, 30), (80, 120), (80, 117), (40, 58)),  # downscale after the crop
    ((16, 24), (16, 24), (16, 24), (16, 24)),  # every resize is the identity
    ((16, 24), None, (12, 20), (30, 30)),  # no padded-size resize
    ((1, 1), (5, 7), (5, 7), (5, 7)),  # a single input pixel
]


def _literal(mask_pred, padded_size, image_size, output_size):
    x = mask_pred
    if padded_size is not None:
        x = F.interpolate(x[None], size=padded_size, mode="bilinear", align_corners=False)[0]
    return sem_seg_postprocess(x, image_size, *output_size)


@pytest.mark.parametrize("low,padded,image,out", CHAINS)
def test_resize_matrix_is_the_chain(low, padded, image, out):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *low, generator=g)
    rows = resize_matrix(low[0], None if padded is None else padded[0], image[0], out[0])
    cols = resize_matrix(low[1], None if padded is None else padded[1], image[1], out[1])
    assert rows.shape == (out[0], low[0]) and cols.shape == (out[1], low[1])
    got = rows @ x @ cols.t()
    assert torch.allclose(got, _literal(x, padded, image, out), rtol=0, atol=1e-5)


@pytest.mark.parametrize("rows_per_block", [1, 7, None])
@pytest.mark.parametrize("low,padded,image,out", CHAINS)
def test_outputs_equal_the_literal_chain(low, padded, image, out, rows_per_block):
    g = torch.Generator().manual_seed(1)
    q, k = 9, 5
    mask_pred = 4 * torch.randn(q, *low, generator=g)
    class_probs = F.softmax(torch.randn(q, k + 1, generator=g), -1)[:, :-1]
    prob_queries, positive_queries = torch.tensor([0, 3, 4, 8]), torch.tensor([3, 7])
    got = query_mask_outputs(
        mask_pred, padded, image, out, class_probs=class_probs, prob_queries=prob_queries,
        positive_queries=positive_queries, rows_per_block=rows_per_block,
    )
    logits = _literal(mask_pred, padded, image, out)
    sem_seg = torch.einsum("qc,qhw->chw", class_probs, logits.sigmoid())
    assert got.sem_seg.shape == (k, *out) and got.probs.shape == (4, *out)
    assert torch.allclose(got.sem_seg, sem_seg, rtol=0, atol=1e-6)
    assert torch.allclose(got.probs, logits[prob_queries].sigmoid(), rtol=0, atol=1e-6)
    expected_positive = logits[positive_queries] > 0
    flips = got.positive != expected_positive
    assert not (flips & (logits[positive_queries].abs() > 1e-5)).any()


def test_only_what_is_asked_for():
    mask_pred = torch.randn(4, 8, 8)
    assert query_mask_outputs(mask_pred, (16, 16), (16, 16), (16, 16)) == (None, None, None)
    r = query_mask_outputs(mask_pred, (16, 16), (12, 16), (12, 16), prob_queries=torch.tensor([], dtype=torch.long))
    assert r.sem_seg is None and r.positive is None and r.probs.shape == (0, 12, 16)


def test_no_queries():
    r = query_mask_outputs(
        torch.zeros(0, 8, 8), (16, 16), (16, 16), (20, 20), class_probs=torch.zeros(0, 3),
        prob_queries=torch.zeros(0, dtype=torch.long),
    )
    assert torch.equal(r.sem_seg, torch.zeros(3, 20, 20)) and r.probs.shape == (0, 20, 20)


def test_no_full_resolution_maps_of_every_query():
    """Only the outputs are full-resolution: the semantic scores (K maps) and the requested
    queries' masks; every query's logits exist at full resolution one block of rows at a time."""
    q, k, low, padded, out = 40, 3, (32, 48), (128, 192), (120, 180)
    mask_pred = torch.randn(q, *low)
    class_probs = F.softmax(torch.randn(q, k + 1), -1)[:, :-1]
    with LargestTensor() as mode:
        query_mask_outputs(
            mask_pred, padded, padded, out, class_probs=class_probs,
            prob_queries=torch.tensor([1, 2]), positive_queries=torch.tensor([2]),
            rows_per_block=8,
        )
    full = out[0] * out[1]
    # the largest: the columns resized at the input's rows (low rows x q x padded width)
    assert mode.largest <= max(k * full, low[0] * q * padded[1])
    assert mode.largest * 3 < q * full
