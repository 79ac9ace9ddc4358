"""
Helpers shared by the datasets/prepare_*.py scripts (not a script itself).

The scripts run as modules from the repository root, ``python -m datasets.prepare_...``, and
read the class tables from the installed ``mask2former`` package. They take the dataset root
from --root, defaulting to $DETECTRON2_DATASETS or "datasets", like detectron2 and
mask2former.data.datasets.builtin.
"""
import argparse
import multiprocessing as mp
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Sequence

import numpy as np

from mask2former.data.datasets.catalog import datasets_root
from mask2former.data.datasets.metadata_tables import load_metadata_table

__all__ = [
    "load_metadata_table",
    "make_parser",
    "require",
    "parallel_map",
    "list_files",
    "rgb2id",
    "id2rgb",
    "bbox_xywh",
    "image_ids_from_stems",
    "run_main",
]


def make_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--root", default=datasets_root(), help="dataset root (default: $DETECTRON2_DATASETS or ./datasets)"
    )
    parser.add_argument(
        "--workers", type=int, default=max(1, mp.cpu_count()), help="worker processes (1: no pool)"
    )
    return parser


def require(path: str, what: str, kind: str = "dir") -> None:
    """Raise FileNotFoundError naming ``path`` unless it exists (as a dir or a file)."""
    ok = os.path.isdir(path) if kind == "dir" else os.path.isfile(path)
    if not ok:
        raise FileNotFoundError(f"{what} not found: expected {path} (see datasets/README.md)")


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> List[Any]:
    """``[fn(x) for x in items]``, in a process pool when workers > 1."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with mp.Pool(processes=min(workers, len(items))) as pool:
        return pool.map(fn, items, chunksize=max(1, len(items) // (4 * workers)))


def list_files(folder: str, ext: str) -> List[str]:
    """Sorted names of the files in ``folder`` ending with ``ext`` (non-recursive)."""
    return sorted(f for f in os.listdir(folder) if f.endswith(ext))


def rgb2id(color: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 COCO panoptic PNG -> (H, W) segment ids, id = R + 256 * G + 256**2 * B."""
    color = color.astype(np.uint32)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8, the inverse of rgb2id."""
    ids = ids.astype(np.uint32)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], axis=-1).astype(np.uint8)


def bbox_xywh(mask: np.ndarray) -> List[int]:
    """Tight [x, y, w, h] box of a non-empty (H, W) bool mask."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def image_ids_from_stems(stems: Iterable[str]) -> Dict[str, int]:
    """
    Integer image ids for file stems: the trailing number of names like "ADE_val_00000001"
    when all stems have a distinct one, else 1-based positions in sorted order. The ADE20K
    panoptic and instance jsons both use this, so their image ids agree.
    """
    stems = sorted(stems)
    ids = {}
    for s in stems:
        digits = s.split("_")[-1]
        if not digits.isdigit():
            break
        ids[s] = int(digits)
    if len(ids) == len(stems) and len(set(ids.values())) == len(stems):
        return ids
    return {s: i + 1 for i, s in enumerate(stems)}


def run_main(main: Callable[[], None]) -> None:
    """Run a script's main(); a missing input or bad data ends it with its message, no traceback."""
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
