"""
Pre-generates the synthetic dataset (the registered loaders otherwise do it on first use):

    python -m mask2former.data.synthetic --root datasets --num-train 400 --num-val 50
"""

import argparse
import logging
import sys

from .generator import DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SEED, ensure_synthetic_dataset
from ..datasets.catalog import datasets_root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mask2former.data.synthetic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root",
        default=datasets_root(),
        help="datasets root; data goes to ROOT/synthetic (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    if args.num_train < 1 or args.num_val < 1:
        parser.error("--num-train and --num-val must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = ensure_synthetic_dataset(
        args.root, args.num_train, args.num_val, args.seed, force=args.force
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
