"""
Generates the synthetic video dataset (the registered loaders otherwise do it on first use):

    python -m mask2former_video.data_video.synthetic --root datasets --num-train 300 --num-val 40
"""
import argparse
import logging
import sys

from mask2former.data.datasets.catalog import datasets_root

from .generator import (
    DEFAULT_NUM_FRAMES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    ensure_synthetic_video_dataset,
)


def main(argv=None) -> int:
    prog = "python -m mask2former_video.data_video.synthetic"
    parser = argparse.ArgumentParser(prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root_help = "datasets root; data goes to ROOT/synthetic_video (default: $DETECTRON2_DATASETS or ./datasets)"
    parser.add_argument("--root", default=datasets_root(), help=root_help)
    counts = (
        ("--num-train", DEFAULT_NUM_TRAIN, "training videos"),
        ("--num-val", DEFAULT_NUM_VAL, "validation videos"),
        ("--num-frames", DEFAULT_NUM_FRAMES, "frames per video"),
        ("--seed", DEFAULT_SEED, "random seed: the same seed gives the same files"),
    )
    for flag, default, what in counts:
        parser.add_argument(flag, type=int, default=default, help=f"{what} (default: {default})")
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)
    if min(args.num_train, args.num_val, args.num_frames) < 1:
        parser.error("--num-train, --num-val and --num-frames must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = ensure_synthetic_video_dataset(
        args.root, args.num_train, args.num_val, args.num_frames, args.seed, force=args.force
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
