# Two entry points: `make demo` and `make test`. Each builds .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
# PyTorch. On Linux, PyPI's `torch` is the CUDA build (about 3 GB with its nvidia-* wheels), so when TORCH is not
# given and no NVIDIA GPU answers `nvidia-smi -L`, the CPU build is installed from PyTorch's CPU index instead.
# TORCH=<requirement> (CI: TORCH=torch==2.13.0) installs exactly that from pip's configured indexes, nothing else;
# TORCH_INDEX=<pip options> picks the index yourself (e.g. --index-url https://download.pytorch.org/whl/cu126),
# TORCH_INDEX= none. The requirement is quoted for the shell (TORCH='torch>=2.4' is fine); TORCH_INDEX is not.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ifeq ($(origin TORCH),undefined)
# --retries 1: where that index cannot be reached, pip moves on at once to the indexes and wheel folders it is
# configured with (which may hold a CPU build) instead of retrying for minutes
TORCH_INDEX ?= $(if $(shell [ "$$(uname -s)" = Linux ] && ! nvidia-smi -L >/dev/null 2>&1 && echo cpu),--index-url $(TORCH_CPU_INDEX) --retries 1)
endif
TORCH       ?= torch
TORCH_INDEX ?=
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test test-slow results clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "Installing PyTorch: pip install $(strip $(TORCH_INDEX) '$(TORCH)')"
	$(PY) -m pip install -q $(TORCH_INDEX) "$(TORCH)" || { echo "PyTorch did not install; choose the build with" \
	    "TORCH=<requirement> and/or TORCH_INDEX=<pip options> (README, Install)" >&2; exit 1; }
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --out samples.png

test: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=15

results: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) examples/make_results.py

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) build *.egg-info
