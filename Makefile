# `make quickstart` and `make test` set everything up on a fresh machine: a Python 3.10 venv at
# .venv with the pinned requirements, and this package installed in editable mode with its
# C++ (and, where a matching CUDA toolkit exists, CUDA) extension built. Both are idempotent.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# pyenv provides 3.10.13 on these machines (see .python-version); any python3.10 works.
SYS_PYTHON ?= $(shell PYENV_VERSION=3.10.13 command -v python3.10 2>/dev/null || echo python3.10)
EXT_SOURCES := $(shell find mask2former/modeling/pixel_decoder/ops/src -type f 2>/dev/null)

.PHONY: setup test test-fast quickstart quickstart-video benchmark benchmark-inference \
	benchmark-training clean-ext browser web-demo

setup: $(VENV)/.built

$(VENV)/.deps: requirements.txt
	@test -x $(PY) || PYENV_VERSION=3.10.13 $(SYS_PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.built: $(VENV)/.deps setup.py $(EXT_SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import mask2former._C" && echo "mask2former._C extension built"
	touch $@

test: setup browser
	$(PY) -m pytest -q tests

# the browser tests' Chromium: Debian's package, installed when missing and running as root;
# elsewhere nothing is done and those tests skip, saying why
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && apt-get install -y -qq chromium; \
	fi

# the web demo on http://127.0.0.1:$(PORT) (demo/app.py); WEB_CONFIG and WEIGHTS name the model
PORT ?= 7860
WEB_CONFIG ?= configs/synthetic/panoptic.yaml
WEIGHTS ?= output/quickstart_panoptic/model_final.pth
web-demo: setup
	$(PY) demo/app.py --config-file $(WEB_CONFIG) --port $(PORT) MODEL.WEIGHTS $(WEIGHTS)

quickstart: setup
	bash tools/quickstart.sh

# video: synthetic clips, train, track AP, drawn tracks (CPU)
quickstart-video: setup
	bash tools/quickstart_video.sh

benchmark: setup
	$(PY) benchmarks/ms_deform_attn.py

# whole-model inference by stage (CPU, 2 threads; ~15 min) and training (CPU, 256x256 crops)
benchmark-inference: setup
	$(PY) benchmarks/inference.py

benchmark-training: setup
	$(PY) benchmarks/training.py

clean-ext:
	rm -f $(VENV)/.built mask2former/_C*.so
