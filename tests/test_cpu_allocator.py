"""keep_freed_memory: after it, a large tensor allocated again after being freed reuses the
process's memory (no new page faults), where glibc's default unmaps and faults it in again."""
import os
import platform
import subprocess
import sys

import pytest

from model_utils import REPO

PROGRAM = r"""
import resource, sys
import torch
from mask2former.utils.cpu_allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults_of_one_allocation():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 << 18)  # 64 MB, written and freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_allocation()
print(applied, min(faults_of_one_allocation() for _ in range(3)))
"""

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)


def _run(mode: str, **env):
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], cwd=REPO, capture_output=True, text=True, check=True,
        env={**os.environ, **env},
    ).stdout.split()
    return out[0], int(out[1])


def test_freed_memory_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    _, default_faults = _run("default")
    applied, kept_faults = _run("keep")
    assert default_faults > pages // 2  # glibc's default: a fresh mapping each time
    assert applied == "True" and kept_faults < pages // 20


def test_environment_switch_turns_it_off():
    applied, faults = _run("keep", MASK2FORMER_KEEP_FREED_MEMORY="0")
    assert applied == "False" and faults > (64 << 20) // 4096 // 2
