#!/usr/bin/env python
"""
Compare a checkpoint with the model of a config, without running anything:

    python tools/inspect_checkpoint.py --config-file CONFIG CHECKPOINT [KEY VALUE ...]

Lists the model keys the checkpoint lacks (missing), the checkpoint keys the model does not have
(unexpected) and the keys whose shapes differ (with both shapes), with counts and a one-line
verdict. Reads the same formats as training and evaluation: a ``.pth`` with a ``model`` dict or
a bare state dict, a detectron2 ``.pkl`` (``model`` dict of numpy arrays), or a pretrained
backbone ``.pkl`` matched by name heuristics. Exit code 0 if the checkpoint fits the model
exactly (as evaluation requires), 1 otherwise, 2 for a bad config or unreadable file.
"""

import argparse
import logging
import sys


from detectron2.modeling import build_model

from mask2former.checkpoint import (
    CheckpointReadError,
    KeyReport,
    inspect_model_weights,
)
from mask2former.utils.config_merge import ConfigError
from mask2former.config import build_config


def _verdict(report: KeyReport) -> str:
    if report.is_exact():
        return f"OK: the checkpoint fits the model exactly ({report.num_model_keys} keys)"
    if not report.problems("init").is_exact():
        use = "it cannot be loaded, not even as MODEL.WEIGHTS to start a training"
    elif report.backbone_only:
        use = "a backbone-only checkpoint: usable as MODEL.WEIGHTS to start a training only"
    else:
        use = "usable as MODEL.WEIGHTS to start a training (the classifier is re-initialised)"
    return (
        f"MISMATCH: {len(report.missing)} missing, {len(report.unexpected)} unexpected, "
        f"{len(report.wrong_shapes)} wrong-shape keys; {use}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("checkpoint", help=".pth or .pkl file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    try:
        cfg, _ = build_config(args)
    except ConfigError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    model = build_model(cfg.clone())
    # fvcore logs the same mismatches as warnings: the report below says it all
    logging.getLogger("fvcore.common.checkpoint").setLevel(logging.ERROR)
    try:
        report = inspect_model_weights(model, args.checkpoint)
    except (FileNotFoundError, CheckpointReadError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(report.describe(limit=None))
    print(_verdict(report))
    return 0 if report.is_exact() else 1


if __name__ == "__main__":
    sys.exit(main())
