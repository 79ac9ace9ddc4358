"""What the benchmark scripts share: machine description, timing, and RESULTS.md sections."""
import contextlib
import glob
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from typing import Callable, Dict, Iterator, List, Sequence

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --malloc choices of the benchmarks, with what each means
MALLOC_MODES = {
    "keep": "glibc keeps freed memory for reuse (`mask2former.utils.cpu_allocator`, as "
    "train_net.py and demo/demo.py set it on the CPU), applied alike to every checkout measured",
    "default": "glibc's default malloc settings (large blocks unmapped when freed)",
}


def set_malloc(mode: str) -> bool:
    """Applies ``--malloc`` in a worker. The module is loaded from this checkout's file, so a
    baseline checkout (which may not have it) is measured under the same setting and its own
    ``mask2former`` package is still the one imported."""
    if mode == "default":
        return False
    path = os.path.join(REPO, "mask2former", "utils", "cpu_allocator.py")
    spec = importlib.util.spec_from_file_location("_benchmark_cpu_allocator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.keep_freed_memory()


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1/5/15-minute load averages, to tell how busy the machine was during a run."""
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn: Callable[[], None], repeats: int, device: str) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    synchronize(device)
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_section(name: str, text: str, path: str = RESULTS) -> None:
    """Replace (or append) the section between ``<!-- BEGIN name -->`` and ``<!-- END name -->``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    section = f"{begin}\n{text.rstrip()}\n{end}\n"
    content = open(path).read() if os.path.exists(path) else "# Benchmark results\n\n"
    if begin in content and end in content:
        before, rest = content.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        content = before + section + ("\n" + after if after else "")
    else:
        content = content.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(content)


def run_worker(script: str, spec: Dict, cwd: str) -> Dict:
    """Runs ``script --worker <spec as json>`` in a fresh Python process (so that each
    measurement has its own memory peak and imports its own checkout) and returns the json
    dict it prints last."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(script), "--worker", json.dumps(spec)],
        capture_output=True, text=True, cwd=cwd,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{os.path.basename(script)} worker failed for {spec}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def checkout_config(spec: Dict, config_file: str, opts: Sequence[str] = ()):
    """
    In a worker process: applies ``spec["malloc"]`` (CPU), makes ``spec["repo"]``'s
    ``mask2former`` the one imported, sets ``spec["threads"]`` and returns that checkout's
    config of ``config_file`` (a path inside the checkout) + ``opts`` on ``spec["device"]``,
    with no weights.
    """
    if spec["device"] == "cpu":
        set_malloc(spec.get("malloc", "default"))
    sys.path.insert(0, spec["repo"])
    torch.set_num_threads(spec["threads"])
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    import mask2former  # noqa: F401  (registers the components and datasets)
    from mask2former import add_maskformer2_config

    package = os.path.dirname(os.path.abspath(mask2former.__file__))
    if package != os.path.join(os.path.abspath(spec["repo"]), "mask2former"):
        raise RuntimeError(f"imported {package}, not the package of {spec['repo']}")
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(os.path.join(spec["repo"], config_file))
    cfg.merge_from_list(["MODEL.DEVICE", spec["device"], "MODEL.WEIGHTS", "", *opts])
    return cfg


@contextlib.contextmanager
def revision_checkout(rev: str) -> Iterator[str]:
    """A temporary checkout of git revision ``rev`` of this repository (``git archive``), with
    this checkout's compiled ``mask2former/_C*.so`` copied in (the op's sources rarely change
    and cannot be built here in a benchmark); yields its path and removes it afterwards."""
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", f"{rev}^{{commit}}"],
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise ValueError(f"--baseline {rev!r} is not a git revision of {REPO}: {sha.stderr.strip()}")
    path = tempfile.mkdtemp(prefix=f"baseline-{rev}-")
    try:
        archive = subprocess.run(["git", "-C", REPO, "archive", sha.stdout.strip()],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
        for so in glob.glob(os.path.join(REPO, "mask2former", "_C*.so")):
            shutil.copy(so, os.path.join(path, "mask2former"))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class PeakTensorMemory:
    """While active: the most bytes held at once by the storages that torch ops create (each
    storage counted once, until it is freed; views and in-place results not counted), forward
    and backward alike."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                outs = out if isinstance(out, (tuple, list)) else [out]
                for t, ret in zip(outs, func._schema.returns):
                    # views and in-place results alias storages that exist already
                    if isinstance(t, torch.Tensor) and ret.alias_info is None:
                        tracker._track(t.untyped_storage())
                return out

        self._mode = _Mode()
        self._seen = set()
        self.held = self.peak = 0

    def _track(self, storage) -> None:
        key = id(storage)
        if key in self._seen or storage.nbytes() == 0:
            return
        self._seen.add(key)
        self.held += storage.nbytes()
        self.peak = max(self.peak, self.held)
        weakref.finalize(storage, self._release, key, storage.nbytes())

    def _release(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.held -= nbytes

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)
