"""keep_freed_memory: after it, large tensors allocated again after others were freed reuse the
process's memory, where glibc's default unmaps every large block and faults it in again."""
import os
import platform
import subprocess
import sys

import pytest

from model_utils import REPO

# Rounds of a forward-pass-like pattern: a few large tensors (33 to 64 MB) allocated, written and
# freed; prints the MB the kernel faulted in over 10 rounds after a first one.
PROGRAM = r"""
import resource, sys
import torch
from mask2former.utils.cpu_allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def one_round():
    a = torch.ones(40 << 18); b = torch.ones(64 << 18); c = a + 1
    del a
    d = torch.ones(33 << 18)
    del b, c, d
one_round()
before = faults()
for _ in range(10):
    one_round()
print(applied, (faults() - before) * 4096 // 2**20)
"""
ROUND_MB = 40 + 64 + 40 + 33

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
    _, default_mb = _run("default")
    applied, kept_mb = _run("keep")
    assert default_mb > 0.8 * 10 * ROUND_MB  # glibc's default: fresh mappings every round
    assert applied == "True" and kept_mb < default_mb / 4


def test_environment_switch_turns_it_off():
    applied, faulted_mb = _run("keep", MASK2FORMER_KEEP_FREED_MEMORY="0")
    assert applied == "False" and faulted_mb > 0.8 * 10 * ROUND_MB
