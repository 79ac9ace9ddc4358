"""Inference at a large output size: the block-wise post-processor with many small blocks (as
at 3000x4000) gives the plain one's outputs, instance masks turn bool where float masks would be
large and stay readable by detectron2's evaluators and visualizer, and the peak memory of
post-processing is the outputs' own."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from detectron2.data import MetadataCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.visualizer import Visualizer

from mask2former.modeling import mask_resize, postprocessing, segment_assembly
from mask2former.modeling.postprocessing import (
    SEMANTIC_LABEL_SCORES,
    SEMANTIC_LABELS,
    BlockwisePostProcessor,
    InferenceSettings,
    PlainPostProcessor,
    semantic_labels,
)
from model_utils import REPO

NUM_CLASSES, QUERIES = 12, 10
IS_THING = torch.arange(NUM_CLASSES) < 6
SETTINGS = InferenceSettings(True, True, True, 0.3, 0.2, 8)


def _predictions(low=(13, 17), seed=0):
    g = torch.Generator().manual_seed(seed)
    mask_cls = torch.randn(QUERIES, NUM_CLASSES + 1, generator=g)
    for q, c in enumerate([1, 1, 8, 9, 3]):  # confident queries of thing and stuff classes
        mask_cls[q, c] += 8.0
    return mask_cls, 4 * torch.randn(QUERIES, *low, generator=g)


@pytest.mark.parametrize("budget", [1, 2000, 40000])
def test_many_small_blocks_give_the_plain_outputs(monkeypatch, budget):
    """A block budget of a few rows or less (one output row per block, the column window a
    few input rows) exercises the sliding window as a large output does."""
    monkeypatch.setitem(mask_resize._BLOCK_BYTES, "cpu", budget)
    mask_cls, mask_pred = _predictions()
    args = (mask_cls, mask_pred, (52, 68), (47, 66), (121, 93), IS_THING)
    got = BlockwisePostProcessor(SETTINGS)(*args)
    want = PlainPostProcessor(SETTINGS)(*args)
    assert torch.allclose(got["sem_seg"], want["sem_seg"], rtol=0, atol=1e-6)
    assert got["panoptic_seg"][1] == want["panoptic_seg"][1] and len(want["panoptic_seg"][1]) >= 2
    assert (got["panoptic_seg"][0] != want["panoptic_seg"][0]).float().mean() < 1e-3
    a, b = got["instances"], want["instances"]
    assert len(b) >= 3 and torch.equal(a.pred_classes, b.pred_classes)
    assert torch.allclose(a.scores, b.scores, rtol=0, atol=1e-6)
    assert (a.pred_masks != b.pred_masks).float().mean() < 1e-3
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1)


def test_no_instance_kept_when_only_stuff_classes_win():
    """With instances restricted to thing classes, a prediction where every query's classes are
    stuff keeps no instance: an empty Instances, not an error (found by benchmarks/deploy.py
    with random weights)."""
    mask_cls, mask_pred = _predictions()
    mask_cls[:, :6] = -1e4  # no thing class can be picked
    args = (mask_cls, mask_pred, (52, 68), (47, 66), (121, 93), IS_THING)
    got = BlockwisePostProcessor(SETTINGS)(*args)["instances"]
    want = PlainPostProcessor(SETTINGS)(*args)["instances"]
    assert len(got) == len(want) == 0
    assert got.pred_masks.shape == want.pred_masks.shape == (0, 121, 93)
    assert got.pred_boxes.tensor.shape == (0, 4)


def test_large_instance_masks_are_bool_and_read_like_float_ones(monkeypatch):
    mask_cls, mask_pred = _predictions()
    args = (mask_cls, mask_pred, (52, 68), (52, 68), (52, 68), IS_THING)
    small = BlockwisePostProcessor(SETTINGS)(*args)["instances"]
    monkeypatch.setattr(segment_assembly, "FLOAT_MASKS_MAX_BYTES", 0)
    large = BlockwisePostProcessor(SETTINGS)(*args)["instances"]
    assert small.pred_masks.dtype == torch.float32 and large.pred_masks.dtype == torch.bool
    assert torch.equal(large.pred_masks, small.pred_masks.bool())
    assert torch.equal(large.scores, small.scores)
    # COCO results (RLE) and drawings are the same
    assert instances_to_coco_json(large, 1) == instances_to_coco_json(small, 1)
    image = np.zeros((52, 68, 3), dtype=np.uint8)
    drawn = []
    for instances in (small, large):
        np.random.seed(0)  # the visualizer's random colours
        visualizer = Visualizer(image, MetadataCatalog.get("__unused__"))
        drawn.append(visualizer.draw_instance_predictions(instances).get_image())
    assert np.array_equal(drawn[0], drawn[1])


MEMORY_SCRIPT = r"""
import json, resource, sys
import torch
from mask2former.modeling import segment_assembly
from mask2former.modeling.postprocessing import BlockwisePostProcessor, InferenceSettings

torch.set_num_threads(1)
segment_assembly.FLOAT_MASKS_MAX_BYTES = 0  # bool instance masks, as at 3000x4000
semantic_output, classes = sys.argv[1], int(sys.argv[2])
queries, out = 100, (600, 900)
g = torch.Generator().manual_seed(0)
mask_cls = torch.randn(queries, classes + 1, generator=g)
mask_cls[torch.arange(queries), torch.arange(queries) % classes] += 6  # every query confident
mask_pred = 4 * torch.randn(queries, 64, 96, generator=g)
settings = InferenceSettings(True, True, True, 0.5, 0.8, 100, True, semantic_output)
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
before = resident()
result = BlockwisePostProcessor(settings)(
    mask_cls, mask_pred, (256, 384), (250, 375), out, torch.ones(classes, dtype=torch.bool)
)
# this process's own high-water mark: ru_maxrss would also count the parent's pages at fork
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
instances = result["instances"]
semantic = [v for k, v in result.items() if k.startswith("sem_seg")]
outputs = sum(t.numel() * t.element_size() for t in (*semantic, result["panoptic_seg"][0], instances.pred_masks))
import mask2former, os
package = os.path.dirname(os.path.abspath(mask2former.__file__))
print(json.dumps({"growth": peak - before, "outputs": outputs, "instances": len(instances), "package": package}))
"""


@pytest.mark.parametrize("semantic_output, classes", [("scores", 20), ("labels", 133)])
def test_post_processing_memory_is_the_outputs_own(semantic_output, classes):
    """Semantic, panoptic and 100 instance outputs at 600x900 from 100 queries, in a fresh
    process: the peak RSS growth is the outputs' size (99 MB with 20 classes' scores) plus a few
    blocks of working memory, where the plain computation holds every query's float logits
    (216 MB), their sigmoid (216 MB) and the instance masks as floats (216 MB). In the label
    form, with COCO's 133 classes, the growth stays below the (133, 600, 900) scores alone
    (287 MB): they never exist."""
    # this checkout's package, whatever other checkouts earlier tests put on sys.path
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, semantic_output, str(classes)],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["package"] == os.path.join(REPO, "mask2former") and measured["instances"] == 100
    assert measured["growth"] < measured["outputs"] + 96 * 2**20, measured
    if semantic_output == "labels":
        assert measured["growth"] < classes * 600 * 900 * 4, measured


# ----------------------------------------------------------------- semantic output as labels
def _tied_predictions():
    """Predictions whose classes 2 and 4 have equal probabilities for every query and win
    many pixels, so that the semantic scores tie exactly there."""
    mask_cls, mask_pred = _predictions()
    mask_cls[:, 2] = mask_cls[:, 4] = 6.0
    return mask_cls, mask_pred


@pytest.mark.parametrize("postprocessor", [BlockwisePostProcessor, PlainPostProcessor])
@pytest.mark.parametrize("all_outputs", [True, False])
@pytest.mark.parametrize("small_pieces", [False, True])
def test_labels_are_the_argmax_of_the_scores(monkeypatch, postprocessor, all_outputs, small_pieces):
    """The label form equals torch.argmax of the default scores, ties going to the first class,
    and its scores are the winning ones: with all three outputs (mask logits resized first) and
    with the semantic output alone (scores resized last), in one piece and in small pieces
    (blocks of a few rows; one class resized at a time)."""
    if small_pieces:
        monkeypatch.setitem(mask_resize._BLOCK_BYTES, "cpu", 2000)
        monkeypatch.setattr(postprocessing, "_CLASS_CHUNK_BYTES", 1)
    mask_cls, mask_pred = _tied_predictions()
    flags = (True, all_outputs, all_outputs, 0.3, 0.2, 8, all_outputs)
    args = (mask_cls, mask_pred, (52, 68), (47, 66), (121, 93), IS_THING)
    scores = postprocessor(InferenceSettings(*flags))(*args)
    labels = postprocessor(InferenceSettings(*flags, semantic_output="labels"))(*args)
    assert "sem_seg" not in labels and set(labels) - {SEMANTIC_LABELS, SEMANTIC_LABEL_SCORES} == set(scores) - {"sem_seg"}
    want = scores["sem_seg"].argmax(dim=0)
    assert labels[SEMANTIC_LABELS].shape == (121, 93) and labels[SEMANTIC_LABELS].dtype == torch.long
    assert torch.equal(labels[SEMANTIC_LABELS], want)
    assert torch.equal(labels[SEMANTIC_LABEL_SCORES], scores["sem_seg"].max(dim=0).values)
    tied = scores["sem_seg"][2] == scores["sem_seg"][4]
    assert (tied & (want == 2)).sum() > 100 and not (want == 4).any()
    assert torch.equal(semantic_labels(labels), semantic_labels(scores))
    if all_outputs:  # the other outputs are unchanged
        assert torch.equal(labels["panoptic_seg"][0], scores["panoptic_seg"][0])
        assert torch.equal(labels["instances"].pred_masks, scores["instances"].pred_masks)


def test_unknown_semantic_output_names_the_key():
    with pytest.raises(ValueError, match="MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT.*'probabilities'"):
        InferenceSettings(True, False, False, 0.3, 0.2, 8, False, "probabilities")
