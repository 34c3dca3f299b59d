# `make test` and `make demo` work on a fresh machine: they build .venv from requirements.txt first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
# one stamp per requested GPU flavour: asking for NCCL after a CPU build runs the installer again
HOROVOD_GPU := $(HOROVOD_GPU_OPERATIONS)$(HOROVOD_GPU_ALLREDUCE)
HOROVOD_STAMP := $(VENV)/.horovod-installed$(if $(HOROVOD_GPU),-gpu-$(HOROVOD_GPU))

.PHONY: test test-fast demo study compare bench horovod clean-venv

# The project itself goes in editable (pyproject.toml): `python -m eps_resnet.figures` and the eps-* commands then
# work from any directory.
$(STAMP): requirements.txt pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Horovod is built from source (3-6 minutes the first time, seconds from the wheel cached in ~/.cache/eps-resnet).
$(HOROVOD_STAMP): $(STAMP) tools/install_horovod.sh
	bash tools/install_horovod.sh $(PY)
	touch $(HOROVOD_STAMP)

horovod: $(HOROVOD_STAMP)

# The whole suite (CI's command): about 15 minutes on 2 cores, plus the Horovod build the first time.
test: $(STAMP) $(HOROVOD_STAMP)
	$(PY) -m pytest

# The unit tests only (no training runs, no Horovod build): under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

demo: $(STAMP)
	$(PY) demo.py

# Plain and ε-ResNets of depths 14, 20, 32 on the bundled digits, then python -m eps_resnet.study (~25 minutes).
study: $(STAMP)
	$(PY) tools/study_grid.py

# Plain, ε-ResNet, channels and both, seeds 1-3 on the bundled digits, exported; tables and figure into
# docs/comparison (python -m eps_resnet.compare; ~25 minutes on 2 cores).
compare: $(STAMP)
	$(PY) -m eps_resnet.compare --out compare_runs/$$(date +%Y%m%d-%H%M%S) --docs docs/comparison

bench: $(STAMP)
	$(PY) bench/gate_overhead.py

clean-venv:
	rm -rf $(VENV)
