"""mask2former/export/postprocess_numpy.py against MaskFormer's own post-processing, on random
logits of one image: semantic argmax on >= 99.9 % of pixels, the same panoptic segments,
instance scores within 1e-3; and the module runs without torch."""
import importlib.util
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from detectron2.structures import BitMasks

from mask2former.export.exporter import ONNX_OPSET
from mask2former.export.postprocess_graph import write_dense_block_graph
from mask2former.export.postprocess_numpy import bilinear_matrix, dense_block, postprocess
from mask2former.modeling.postprocessing import InferenceSettings, build_mask_postprocessor
from model_utils import REPO

NUM_CLASSES, NUM_QUERIES = 6, 12
IS_THING = np.array([True, True, True, False, False, False])


def random_logits(seed: int, mask_size=(25, 35)):
    g = torch.Generator().manual_seed(seed)
    # confident classes and smooth masks: segments of many pixels, as a trained model gives
    mask_cls = 8 * torch.randn(NUM_QUERIES, NUM_CLASSES + 1, generator=g)
    coarse = 6 * torch.randn(1, NUM_QUERIES, 5, 7, generator=g)
    mask_pred = torch.nn.functional.interpolate(coarse, size=mask_size, mode="bilinear")[0]
    return mask_cls, mask_pred + 0.3 * torch.randn(mask_pred.shape, generator=g)


@pytest.fixture(scope="module")
def dense_steps(tmp_path_factory):
    """{name: the dense step}: NumPy's, and the export's graph run by the predictor's
    onnxruntime runner."""
    spec = importlib.util.spec_from_file_location("onnx_predictor", os.path.join(REPO, "demo", "onnx_predictor.py"))
    predictor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predictor)
    path = write_dense_block_graph(str(tmp_path_factory.mktemp("dense")), ONNX_OPSET)
    return {"numpy": dense_block, "onnxruntime": predictor.OnnxDenseBlock(path, threads=1)}


@pytest.mark.parametrize("size", [(7, 7), (25, 100), (100, 25), (33, 50)])
def test_bilinear_matrix_resizes_as_interpolate(size):
    x = torch.randn(3, size[0])
    expected = torch.nn.functional.interpolate(x[:, None, None], size=(1, size[1]), mode="bilinear")[:, 0, 0]
    got = x.numpy() @ bilinear_matrix(*size).T
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("dense", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("seed, rows_per_block", [(0, None), (1, 7)])
@pytest.mark.parametrize(
    "on, before",
    [((True, True, True), True), ((True, False, False), False), ((False, True, False), True),
     ((False, False, True), True)],
)
def test_numpy_postprocessing_equals_maskformers(dense_steps, dense, seed, rows_per_block, on, before):
    """In one block of rows (the default at this size) and in blocks of 7 rows, with either
    dense step."""
    settings = InferenceSettings(*on, 0.5, 0.3, 10, before)
    mask_cls, mask_pred = random_logits(seed)
    padded, image, output = (100, 140), (97, 131), (150, 200)
    is_thing = torch.from_numpy(IS_THING) if settings.panoptic_on else None
    expected = build_mask_postprocessor("blockwise", settings)(
        mask_cls, mask_pred, padded, image, output, is_thing
    )
    got = postprocess(mask_cls.numpy(), mask_pred.numpy(), padded, image, output, settings,
                      IS_THING if settings.panoptic_on else None, rows_per_block, dense=dense_steps[dense])
    assert sorted(got) == sorted(expected)
    if settings.semantic_on:
        assert got["sem_seg"].shape == tuple(expected["sem_seg"].shape)
        agree = (got["sem_seg"].argmax(0) == expected["sem_seg"].argmax(0).numpy()).mean()
        assert agree >= 0.999, agree
    if settings.panoptic_on:
        (e_ids, e_segments), (g_ids, g_segments) = expected["panoptic_seg"], got["panoptic_seg"]
        assert len(e_segments) >= 2 and g_segments == e_segments
        assert (g_ids == e_ids.numpy()).mean() >= 0.999
    if settings.instance_on:
        e, g = expected["instances"], got["instances"]
        order = torch.argsort(e.scores, descending=True)
        assert len(g["scores"]) == len(e) > 0
        np.testing.assert_allclose(g["scores"], e.scores[order].numpy(), rtol=0, atol=1e-3)
        np.testing.assert_array_equal(g["pred_classes"], e.pred_classes[order].numpy())
        agree = (g["pred_masks"] == e.pred_masks[order].bool().numpy()).mean()
        assert agree >= 0.999, agree
        # tight boxes of the masks, in the model's convention; equal where the masks are equal
        boxes = BitMasks(torch.from_numpy(g["pred_masks"])).get_bounding_boxes().tensor.numpy()
        np.testing.assert_array_equal(g["pred_boxes"], boxes)
        same = (g["pred_masks"] == e.pred_masks[order].bool().numpy()).all(axis=(1, 2))
        np.testing.assert_array_equal(g["pred_boxes"][same], e.pred_boxes.tensor[order].numpy()[same])


def test_numpy_postprocessing_runs_without_torch_or_detectron2():
    path = os.path.join(REPO, "mask2former", "export", "postprocess_numpy.py")
    script = (
        "import sys, importlib.util, types\n"
        "sys.modules['torch'] = sys.modules['detectron2'] = None\n"
        f"spec = importlib.util.spec_from_file_location('pp', {path!r})\n"
        "pp = importlib.util.module_from_spec(spec); spec.loader.exec_module(pp)\n"
        "import numpy as np\n"
        "s = types.SimpleNamespace(semantic_on=True, panoptic_on=True, instance_on=True,\n"
        "    object_mask_threshold=0.8, overlap_threshold=0.8, test_topk_per_image=5,\n"
        "    sem_seg_postprocess_before_inference=True)\n"
        "r = pp.postprocess(np.zeros((4, 3)), np.zeros((4, 8, 8)), (32, 32), (30, 31), (30, 31), s,\n"
        "    np.array([True, False]))\n"
        "print(sorted(r))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['instances', 'panoptic_seg', 'sem_seg']"


@pytest.mark.parametrize("dense", ["numpy", "onnxruntime"])
def test_extreme_logits_give_probabilities_without_warnings(dense_steps, dense):
    """Mask logits far below -88 (exp overflows in float32) are probability 0, silently."""
    settings = InferenceSettings(True, False, False, 0.5, 0.3, 10, True)
    mask_cls = np.zeros((2, 3), dtype=np.float32)
    mask_pred = np.stack([np.full((4, 4), -500.0), np.full((4, 4), 500.0)]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sem_seg = postprocess(mask_cls, mask_pred, (16, 16), (16, 16), (16, 16), settings,
                              dense=dense_steps[dense])["sem_seg"]
    np.testing.assert_allclose(sem_seg, np.full((2, 16, 16), 1 / 3), rtol=1e-6)


@pytest.mark.parametrize("with_mixing", [True, False])
@pytest.mark.parametrize("panoptic_queries, instance_queries", [([1, 3], [0, 3]), ([], [2]), ([0], [])])
def test_dense_step_graph_computes_what_numpy_does(dense_steps, with_mixing, panoptic_queries, instance_queries):
    """The graph's semantic scores, kept queries' probabilities (also far from 0: relative
    error, where onnxruntime's own Sigmoid is 1e-7 off in absolute terms), binary masks and
    sums inside them against NumPy's; no query kept gives empty outputs."""
    rng = np.random.default_rng(0)
    rows = rng.random((5, 3), dtype=np.float32)
    columns = (20 * rng.standard_normal((4, 3, 9))).astype(np.float32)
    mixing = rng.random((6, 4), dtype=np.float32) if with_mixing else None
    queries = np.array(panoptic_queries, dtype=np.int64), np.array(instance_queries, dtype=np.int64)
    scores = {name: np.zeros((6, 5 * 9), np.float32) for name in dense_steps}
    results = {name: step(rows, columns, mixing, *queries, scores[name] if with_mixing else None)
               for name, step in dense_steps.items()}
    (probs, masks, inside), (ort_probs, ort_masks, ort_inside) = results["numpy"], results["onnxruntime"]
    assert ort_probs.shape == probs.shape == (len(panoptic_queries), 5, 9)
    assert ort_masks.shape == masks.shape == (len(instance_queries), 5, 9) and ort_masks.dtype == bool
    np.testing.assert_allclose(ort_probs, probs, rtol=1e-5, atol=1e-30)
    np.testing.assert_array_equal(ort_masks, masks)
    np.testing.assert_allclose(ort_inside, inside, rtol=1e-5)
    if len(instance_queries):
        assert masks.any() and (~masks).any()
        expected = 1 / (1 + np.exp(-np.matmul(rows, columns)[queries[1]].astype(np.float64)))
        np.testing.assert_allclose(inside, (expected * masks).sum((1, 2)), rtol=1e-5)
    if with_mixing:
        assert scores["numpy"].any()
        np.testing.assert_allclose(scores["onnxruntime"], scores["numpy"], rtol=1e-5, atol=1e-30)
