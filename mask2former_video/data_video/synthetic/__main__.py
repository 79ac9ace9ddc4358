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
    parser = argparse.ArgumentParser(
        prog="python -m mask2former_video.data_video.synthetic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root",
        default=datasets_root(),
        help="datasets root; data goes to ROOT/synthetic_video (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN, help="training videos")
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL, help="validation videos")
    parser.add_argument("--num-frames", type=int, default=DEFAULT_NUM_FRAMES, help="frames per video")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
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
