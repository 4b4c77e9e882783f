# Two entry points: `make demo` and `make test`. Each builds .venv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
# CPU builds: CI sets TORCH=torch==2.13.0 (a local CPU wheel); users keep a plain `torch` requirement.
TORCH  ?= torch
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test test-slow results clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
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
