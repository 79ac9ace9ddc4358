"""benchmarks/compare_outputs.py's report: how far two checkouts' outputs of the same images are
apart, instances matched by score order whatever order each checkout lists them in."""
import torch

from benchmarks.compare_outputs import compare


def _outputs(sem_shift=0.0, flip_pixel=False, reorder=False):
    sem = torch.zeros(3, 4, 5)
    sem[0, 0, 0] += sem_shift
    pan = torch.zeros(4, 5, dtype=torch.int32)
    if flip_pixel:
        pan[1, 1] = 1
    scores, classes = torch.tensor([0.9, 0.5]), torch.tensor([2, 7])
    masks = torch.zeros(2, 4, 5, dtype=torch.bool)
    masks[0, :2] = True
    if reorder:
        scores, classes, masks = scores.flip(0), classes.flip(0), masks.flip(0)
    return [{"sem_seg": sem, "panoptic": pan, "segments": [{"id": 1}], "scores": scores,
             "classes": classes, "masks": masks}]


def test_identical_outputs_listed_in_another_order():
    res = compare(_outputs(), _outputs(reorder=True))
    assert res["sem_seg max |diff|"] == 0.0
    assert res["panoptic pixels differing (max fraction)"] == 0.0
    assert res["images with equal segments_info"] == 1
    assert res["same classes in score order"] and res["instance mask pixels differing"] == 0


def test_differences_are_reported():
    res = compare(_outputs(), _outputs(sem_shift=1e-3, flip_pixel=True))
    assert abs(res["sem_seg max |diff|"] - 1e-3) < 1e-9
    assert abs(res["panoptic pixels differing (max fraction)"] - 1 / 20) < 1e-6
