"""
Fingerprints of a few training steps of a tiny COCO-panoptic-like Mask2Former (R18 with frozen
BN, two deformable encoder layers, AdamW with full-model gradient clipping, 96x96 synthetic
batches), for ``test_training_step_equal.py``: the losses of every step, and per parameter the
sum and the sum of squares of its gradient after the first backward pass and of its value after
the last optimizer step.

The stored reference (``training_step_reference.json``) was computed by the implementation
before the training-path speed-ups (git revision b209547), with this file copied into a
checkout of it:

    python tests/modeling/training_step_reference.py [--repo CHECKOUT] > tests/modeling/training_step_reference.json
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional

CONFIG = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
OPTS = [
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "7",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "64",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "2",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.NHEADS", "4",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "MODEL.MASK_FORMER.DEC_LAYERS", "4",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
]
SIZE, BATCH, STEPS = 96, 2, 2


def training_fingerprints(repo: str, opts: List[str] = ()) -> Dict:
    """Runs ``STEPS`` training steps of the tiny model of ``repo``'s package (seed 0) and
    returns {"losses": [{name: value}] per step, "grads": {param: [sum, sum of squares]}
    after the first backward, "updates": {param: [sum, sum of squares]} of (value after the last
    step - initial value)}."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.projects.deeplab import add_deeplab_config

    from benchmarks.training import synthetic_batch
    from mask2former import add_maskformer2_config
    from mask2former.solver import build_optimizer

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(os.path.join(repo, CONFIG))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *OPTS, *opts])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES

    def stats(t: torch.Tensor) -> List[float]:
        t = t.double()
        return [float(t.sum()), float((t * t).sum())]

    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses, grads = [], {}
    for step in range(STEPS):
        terms = model(synthetic_batch(BATCH, SIZE, num_classes, seed=step))
        optimizer.zero_grad()
        sum(terms.values()).backward()
        losses.append({k: float(v) for k, v in terms.items()})
        if step == 0:
            grads = {n: stats(p.grad) for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
    updates = {n: stats(p.detach() - initial[n]) for n, p in model.named_parameters()}
    return {"losses": losses, "grads": grads, "updates": updates}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), help="checkout whose mask2former package is measured")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.repo)
    import torch

    torch.set_num_threads(1)
    print(json.dumps(training_fingerprints(args.repo), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
