# Two commands on a fresh machine: `make demo` and `make test` (both create .venv when missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jointsrseg-installed
# CPU build by default; for CUDA: make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128" ...
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,labels,slicer,atropos
THREADS ?= 2

.PHONY: setup demo test lint bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	PYTHONUTF8=1 OMP_NUM_THREADS=$(THREADS) $(VENV)/bin/jointsrseg demo --out-dir demo_out

test: $(STAMP)
	@# Offscreen slice-view rendering for the Slicer tests (skipped with a printed reason if this cannot install).
	-command -v apt-get >/dev/null && (dpkg -s libosmesa6 >/dev/null 2>&1 || apt-get install -y -q libosmesa6 >/dev/null) || true
	@# Headless browser for the web panel's tests (skipped with a printed reason if this cannot install).
	-command -v apt-get >/dev/null && (dpkg -s chromium chromium-driver >/dev/null 2>&1 || apt-get install -y -q chromium chromium-driver >/dev/null) || true
	PYTHONUTF8=1 OMP_NUM_THREADS=$(THREADS) $(PY) -m pytest Testing -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	PYTHONUTF8=1 OMP_NUM_THREADS=$(THREADS) $(PY) -m benchmarks.run_all --out benchmarks/results

docs: $(STAMP)
	$(PY) docs/build_models_table.py

clean:
	rm -rf demo_out .pytest_cache .ruff_cache
