#!/usr/bin/env bash
# One command for a CUDA machine: builds mask2former._C with its CUDA kernels into the source
# tree, then runs the CUDA op tests (also under compute-sanitizer memcheck and racecheck), the
# op benchmark (fp32, bf16) against PyTorch, inference at 800x1333 (fp32, AMP) and the peak
# training memory per image at 1024x1024 LSJ (R50, Swin-L) against the paper's 6 GB; each step
# has a time budget, and one table sums them up (benchmarks/gpu_check.py). On a machine without
# CUDA it says so and exits 0. Needs no network.
#
#   bash benchmarks/gpu_check.sh [--only STEP ...] [--budget-scale X]
#
# Python: $PYTHON, else .venv/bin/python, else python3. Where detectron2 is not installed
# (the GPU machine), run ../shared/device/prepare.sh first and carry .whl and .d2: the wheels
# are installed into .site (offline) and .site, .d2 put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then py=$PYTHON
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3; fi

if ! reason=$("$py" -c 'import torch; print("" if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA device")' 2>/dev/null); then
  reason="$py cannot import torch"
fi
if [[ -n "$reason" ]]; then
  echo "gpu_check: skipped, no CUDA ($reason)"
  exit 0
fi

if [[ -d .whl ]] && ! "$py" -c 'import detectron2' 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[[ -d .site ]] && PYTHONPATH="$PWD/.site:$PYTHONPATH"
[[ -d .d2 ]] && PYTHONPATH="$PWD/.d2:$PYTHONPATH"
[[ -d /usr/local/cuda/bin ]] && PATH="$PATH:/usr/local/cuda/bin"
if ! "$py" -c 'import detectron2' 2>/dev/null; then
  echo "gpu_check: detectron2 is not importable: install it, or run ../shared/device/prepare.sh here and bring .whl and .d2" >&2
  exit 1
fi
exec "$py" benchmarks/gpu_check.py "$@"
