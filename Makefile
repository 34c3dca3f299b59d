# `make test` and `make demo` work on a fresh machine: they build .venv from requirements.txt first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: test demo bench clean-venv

$(STAMP): requirements.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) demo.py

bench: $(STAMP)
	$(PY) bench/gate_overhead.py

clean-venv:
	rm -rf $(VENV)
