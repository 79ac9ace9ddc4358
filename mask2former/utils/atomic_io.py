"""
Files written atomically: a temporary file next to the target, flushed, fsynced and renamed into
place, so a process killed at any moment leaves either the old content or the new one.
"""

import contextlib
import os
import secrets
from typing import IO, Any, Iterator

__all__ = ["TEMP_SUFFIX", "atomic_open", "AtomicWritePathManager"]

TEMP_SUFFIX = ".partial"

def _fsync_directory(directory: str) -> None:
    # makes the rename itself durable; not every file system allows opening a directory
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """
    ``open(path, mode)`` for writing, on a temporary file next to ``path`` that is flushed,
    fsynced and renamed to ``path`` when the ``with`` block ends. If the block raises (or the
    process dies), ``path`` keeps its old content; on an exception the temporary file is
    removed.
    """
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    # os.open rather than tempfile.mkstemp: the file gets the usual umask permissions, not 0600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_directory(directory)


class AtomicWritePathManager:
    """
    A path manager (iopath's ``PathManager`` interface) that opens local files for writing with
    :func:`atomic_open` and passes everything else to ``base``. fvcore's ``Checkpointer`` writes
    checkpoints and the ``last_checkpoint`` tag through its ``path_manager``: with this one,
    both are atomic.
    """

    def __init__(self, base: Any):
        self.base = base

    def open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any) -> Any:
        if "w" in mode and "://" not in path:
            return atomic_open(path, mode)
        return self.base.open(path, mode, buffering=buffering, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "base":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)
