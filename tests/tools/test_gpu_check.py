"""benchmarks/gpu_check.sh: skips cleanly without CUDA; its step runner keeps budgets and reports."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from model_utils import REPO

_spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(REPO, "benchmarks", "gpu_check.py"))
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_skips_without_cuda():
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == [f"gpu_check: skipped, no CUDA (torch {torch.__version__} sees no CUDA device)"]


def test_skips_without_torch():
    env = dict(os.environ, PYTHON="/nonexistent/python")
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "gpu_check: skipped, no CUDA (/nonexistent/python cannot import torch)" in out.stdout


def test_step_budget_status_and_table(monkeypatch, tmp_path):
    monkeypatch.setitem(gpu_check.STEPS, "slow", (0.5, "sleeps", ["sleep", "20"]))
    monkeypatch.setitem(gpu_check.STEPS, "fails", (20, "fails", [sys.executable, "-c", "print('3 failed, 1 passed'); raise SystemExit(2)"]))
    monkeypatch.setitem(gpu_check.STEPS, "passes", (20, "passes", [sys.executable, "-c", "print('x'); print('== 4 passed in 1.0s ==')"]))
    rows = [gpu_check.run_step(name, gpu_check.STEPS[name][0], str(tmp_path)) for name in ("slow", "fails", "passes")]
    assert [r["status"] for r in rows] == ["timeout", "failed (2)", "ok"]
    assert rows[0]["seconds"] < 10
    assert [r["result"] for r in rows[1:]] == ["3 failed, 1 passed", "4 passed in 1.0s"]
    assert open(os.path.join(str(tmp_path), "fails.log")).read() == "3 failed, 1 passed\n"
    table = gpu_check.format_table(rows).splitlines()
    assert table[0] == "| step | checks | status | s (budget) | result |" and len(table) == 5
    assert table[2].startswith("| slow | sleeps | timeout | ")


def test_sanitizer_summary_line():
    out = "========= COMPUTE-SANITIZER\n21 passed in 80.1s\n========= ERROR SUMMARY: 0 errors\n"
    assert gpu_check._summary(out) == "ERROR SUMMARY: 0 errors"
