# Two commands that work on a fresh machine: `make demo` and `make test`.
# Both build .venv from nothing the first time (torch is the CPU 2.13.0 build on these machines).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-long lint venv clean-demo gpu-check docs

venv: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# the fuzz and soak runs of minutes (tests marked `long`, which `make test` leaves out)
test-long: $(STAMP)
	$(PY) -m pytest -q -m long

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# docs/cli.md from the argparse parsers (tests/test_docs.py fails when it is stale), then the site
docs: $(STAMP)
	$(PY) -m marsedge.docs_cli > docs/cli.md
	$(PY) -m mkdocs build --strict --site-dir site

demo: $(STAMP)
	bash scripts/demo.sh

clean-demo:
	rm -rf runs/demo

# The GPU paths on whatever NVIDIA machine this is (Jetson, workstation, H100/H200): no install, no
# download; the venv's Python if there is one, else the machine's own. No GPU: one line, exit 0.
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/gpu_check.py
