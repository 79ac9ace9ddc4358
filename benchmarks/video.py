"""Video inference time and memory against video length: whole clip against windows.

Each case runs in a fresh worker process: the video model of ``--config`` (YouTube-VIS 2019
R50 by default, random weights) on ``T`` random frames of 640x360 (the configs' test size, so
the frames are not resized), on the CPU with ``--threads`` threads. Whole-clip inference
(``MODEL.MASK_FORMER.TEST.WINDOW_SIZE 0``, the original's) is compared with windows of
``--window`` frames linked by query matching. Reported: seconds per frame (one timed run after a
2-frame warm-up) and peak memory, as the growth of the process's peak RSS over what it held
before the timed run.

    .venv/bin/python benchmarks/video.py                           # 30, 100, 300 frames
    .venv/bin/python benchmarks/video.py --lengths 8 16 --no-write  # a quick look

Whole-clip runs longer than ``--max-whole`` frames are not started: their memory grows with T
(all frames' features and the attention over T*H*W positions at once) beyond a small machine.
Results go to the ``video`` section of benchmarks/RESULTS.md (unless ``--no-write``).
"""
import argparse
import datetime
import json
import os
import resource
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml"
HEIGHT, WIDTH = 360, 640


def _rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(spec: Dict) -> Dict:
    """In a worker: time and peak memory of one video's inference (see the module doc)."""
    from common import set_malloc  # this checkout's benchmarks/ (the script's directory)

    set_malloc(spec["malloc"])
    sys.path.insert(0, REPO)
    import torch

    torch.set_num_threads(spec["threads"])
    from detectron2.modeling import build_model

    import mask2former_video.video_maskformer_model  # noqa: F401  (registers VideoMaskFormer)
    from mask2former.config import build_config
    from mask2former_video import add_maskformer2_video_config

    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", str(HEIGHT),
            "MODEL.MASK_FORMER.TEST.WINDOW_SIZE", str(spec["window"])]
    args = argparse.Namespace(config_file=os.path.join(REPO, spec["config"]), opts=opts)
    cfg, _ = build_config(args, extra_keys=(add_maskformer2_video_config,))
    torch.manual_seed(0)
    model = build_model(cfg).eval()

    def video(num_frames: int) -> Dict:
        g = torch.Generator().manual_seed(num_frames)
        frames = [torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8, generator=g)
                  for _ in range(num_frames)]
        return {"image": frames, "height": HEIGHT, "width": WIDTH, "video_id": 0, "length": num_frames}

    with torch.no_grad():
        model([video(2)])  # warm-up: lazy initialisation, allocator pools
        inputs = [video(spec["frames"])]
        rss_before = _rss_mb()
        start = time.perf_counter()
        (output,) = model(inputs)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return {
        "frames": spec["frames"],
        "window": spec["window"],
        "s_per_frame": seconds / spec["frames"],
        "peak_growth_mb": max(0.0, peak - rss_before),
        "tracks": len(output["pred_scores"]),
    }


def format_table(rows: List[Dict]) -> str:
    lines = [
        "| frames | inference | s / frame | peak memory growth (MB) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        mode = "whole clip" if r["window"] == 0 else f"windows of {r['window']}"
        if "skipped" in r:
            lines.append(f"| {r['frames']} | {mode} | {r['skipped']} | |")
            continue
        lines.append(f"| {r['frames']} | {mode} | {r['s_per_frame']:.2f} | {r['peak_growth_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--lengths", type=int, nargs="+", default=[30, 100, 300], help="video lengths")
    parser.add_argument("--window", type=int, default=30, help="frames per window (default 30)")
    parser.add_argument("--max-whole", type=int, default=100,
                        help="longest video run as a whole clip (default 100)")
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--malloc", choices=("default", "keep"), default="default",
                        help="glibc's default malloc (default) or the demo's keep-freed-memory setting")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return

    from common import cpu_model, load_average, run_worker, write_section

    rows = []
    for frames in args.lengths:
        for window in (0, args.window):
            if window >= frames:
                continue  # one window is the whole clip
            if window == 0 and frames > args.max_whole:
                rows.append({"frames": frames, "window": 0, "skipped": f"not run (> --max-whole {args.max_whole})"})
                continue
            spec = {"frames": frames, "window": window, "config": args.config, "threads": args.threads,
                    "malloc": args.malloc}
            row = run_worker(__file__, spec, cwd=REPO)
            print(f"{frames} frames, window {window}: {row['s_per_frame']:.2f} s/frame, "
                  f"+{row['peak_growth_mb']:.0f} MB", flush=True)
            rows.append(row)
    table = format_table(rows)
    print(table)
    if args.no_write:
        return
    header = (
        f"## Video: inference against video length ({datetime.date.today()})\n\n"
        f"`benchmarks/video.py --lengths {' '.join(map(str, args.lengths))} --window {args.window} "
        f"--max-whole {args.max_whole}`: `{args.config}`, random weights, {WIDTH}x{HEIGHT} frames, "
        f"CPU ({cpu_model()}), {args.threads} threads, malloc {args.malloc}; load average at the end "
        f"{load_average()} (a shared machine: times vary between runs).\n\n"
    )
    write_section("video", header + table)


if __name__ == "__main__":
    main()
