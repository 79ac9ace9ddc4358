"""Training steps give the losses, gradients and parameter updates of the implementation before
the training-path speed-ups (stored in training_step_reference.json, see
training_step_reference.py), up to float rounding."""
import json
import math
import os

import pytest

from model_utils import REPO
from training_step_reference import training_fingerprints

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training_step_reference.json")
# float32 rounding: the speed-ups reorder sums (attention kernels, the multi-tensor optimizer),
# which moves results by a few float32 ulps per operation; over two steps of a model whose
# gradients pass through ~100 operations that stays below 1e-5 relative.
RTOL = 1e-5


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= RTOL * scale + 1e-9


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "activation_checkpointing"])
def fingerprints(request, one_thread):
    return training_fingerprints(REPO, ["MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING", str(request.param)])


@pytest.fixture(scope="module")
def reference():
    with open(REFERENCE) as f:
        return json.load(f)


def test_losses_equal(fingerprints, reference):
    assert len(fingerprints["losses"]) == len(reference["losses"])
    for step, (ours, ref) in enumerate(zip(fingerprints["losses"], reference["losses"])):
        assert ours.keys() == ref.keys(), f"step {step}: loss names differ"
        for name in ref:
            assert _close(ours[name], ref[name], abs(ref[name])), (step, name, ours[name], ref[name])


@pytest.mark.parametrize("kind", ["grads", "updates"])
def test_gradients_and_updates_equal(fingerprints, reference, kind):
    ours, ref = fingerprints[kind], reference[kind]
    assert sorted(ours) == sorted(ref)
    bad = []
    for name, (ref_sum, ref_sq) in ref.items():
        our_sum, our_sq = ours[name]
        # a sum of elements can cancel to ~0, so its tolerance is relative to the L2 norm
        norm = math.sqrt(ref_sq)
        if not (_close(our_sq, ref_sq, ref_sq) and _close(our_sum, ref_sum, norm)):
            bad.append((name, (our_sum, our_sq), (ref_sum, ref_sq)))
    assert bad == []
