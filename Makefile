# Set-up-and-go targets for a fresh machine (Python >= 3.11 with venv and pip).
PY    ?= python3
VENV  ?= .venv
PIP   := $(VENV)/bin/pip
PYBIN := $(VENV)/bin/python

.PHONY: demo test bench setup setup-test clean

$(VENV)/.core: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[eval]"
	touch $@

# torch first, pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.test: $(VENV)/.core
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $@

setup: $(VENV)/.core
setup-test: $(VENV)/.test

demo: setup
	$(PYBIN) -m jsplade.cli.demo

test: setup-test
	$(PYBIN) -m pytest -q -n 2 --dist loadfile  # two workers (2-core CI); a file stays on one worker

# jsplade against sentence-transformers on this machine (about an hour on 2 cores); see BENCHMARKS.md.
bench: setup-test
	$(PIP) install -q -e '.[bench]'
	$(PYBIN) bench/run_benchmarks.py

clean:
	rm -rf $(VENV) .pytest_cache
