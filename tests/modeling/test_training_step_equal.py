"""Training steps give the losses, gradients and parameter updates of the implementation before
the training-path speed-ups (stored in training_step_reference.json, see
training_step_reference.py), up to float rounding, with and without activation checkpointing."""
import json
import math
import os

import pytest

from model_utils import REPO
from training_step_reference import training_fingerprints

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training_step_reference.json")
# On the machine that stored the reference the fingerprints are bitwise equal (the speed-ups
# keep every kernel call and its operands). The tolerances are for other CPUs, whose BLAS and
# convolution kernels may round differently: a few float32 ulps per operation, far below 1e-5
# relative over two steps (measured 1e-7 for a change of rounding in the linear layers).
# The parameter updates get a looser bound: AdamW divides every gradient element by its own
# magnitude, so an element whose gradient is zero up to rounding (e.g. the key bias of an
# attention layer, to which softmax is invariant) moves by about +-lr whatever its rounding
# noise is; a change of rounding flips such steps (measured: 1.5e-5 of an update's norm).
# The loss side's analytic backward (PointMaskLosses) rounds differently from autograd's chain:
# measured against the reference, losses within 1.4e-7, gradients' sums of squares within 3e-8,
# and the sum of a 1M-element gradient (which cancels) within 1.4e-5 of its norm.
RTOL = {"losses": 1e-5, "grads": 5e-5, "updates": 1e-4}


def _close(a: float, b: float, scale: float, kind: str) -> bool:
    return abs(a - b) <= RTOL[kind] * scale + 1e-9


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
            assert _close(ours[name], ref[name], abs(ref[name]), "losses"), (step, name, ours[name], ref[name])


@pytest.mark.parametrize("kind", ["grads", "updates"])
def test_gradients_and_updates_equal(fingerprints, reference, kind):
    ours, ref = fingerprints[kind], reference[kind]
    assert sorted(ours) == sorted(ref)
    bad = []
    for name, (ref_sum, ref_sq) in ref.items():
        our_sum, our_sq = ours[name]
        # a sum of elements can cancel to ~0, so its tolerance is relative to the L2 norm
        norm = math.sqrt(ref_sq)
        if not (_close(our_sq, ref_sq, ref_sq, kind) and _close(our_sum, ref_sum, norm, kind)):
            bad.append((name, (our_sum, our_sq), (ref_sum, ref_sq)))
    assert bad == []
