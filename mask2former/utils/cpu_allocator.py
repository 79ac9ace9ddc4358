"""
Keep freed memory in the process for reuse (glibc malloc), for CPU inference and training.

By default glibc serves every large allocation (above an adaptive threshold of 128 KB to 32 MB)
with its own ``mmap`` and unmaps it when freed, so the next tensor of that size starts on fresh
pages that the kernel must zero and map one 4 KB page at a time on first touch. A forward pass
of Mask2Former on the CPU allocates and frees many such tensors per image (the semantic scores
alone are 133 x H x W floats, 209 MB at 512 x 768), and on the 2-core VM of
benchmarks/RESULTS.md those page faults took about a tenth of the inference time.
:func:`keep_freed_memory` makes glibc serve large blocks from its heap and keep up to
``trim_threshold`` bytes of freed memory there for the next allocation. The peak memory of one
pass is unchanged; what changes is that memory freed after the peak stays with the process (up
to the threshold) instead of going back to the system, and that over many passes with different
sizes the heap fragments more: over 50 images of 36 different sizes (480 to 640 x 640 to 800)
the resident memory ended at 2.2 GB instead of 1.8 GB with glibc's defaults (both still growing
slowly).

This is process-wide, so the library never calls it on its own: ``train_net.py``,
``demo/demo.py`` and ``tools/visualize_predictions.py`` call it when they run on the CPU (set
``MASK2FORMER_KEEP_FREED_MEMORY=0`` to opt out), and your own program may call it once at
start-up.
"""
import ctypes
import ctypes.util
import logging
import os

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

ENV_SWITCH = "MASK2FORMER_KEEP_FREED_MEMORY"


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """
    Tell glibc's malloc to serve large blocks from its heap (no per-block mmap) and to keep up
    to ``trim_threshold`` bytes of freed memory at the top of the heap.

    Returns:
        True if the settings were applied; False where they cannot be (not glibc, e.g. macOS,
        Windows or musl) or where the environment variable ``MASK2FORMER_KEEP_FREED_MEMORY`` is
        ``0``.
    """
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # a larger threshold than an int holds is clamped: it only bounds what is kept
    threshold = max(0, min(int(trim_threshold), 2**31 - 1))
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))


def keep_freed_memory_on_cpu(device: str) -> bool:
    """:func:`keep_freed_memory` when ``device`` (``MODEL.DEVICE``) is not a GPU; logs it."""
    if device.startswith("cuda") or not keep_freed_memory():
        return False
    logging.getLogger(__name__).info(
        f"CPU run: glibc keeps freed memory for reuse ({ENV_SWITCH}=0 turns this off)"
    )
    return True
