# spin_jax: make setup | make test | make quickstart
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/quickstart

.PHONY: setup test quickstart device-check clean-runs

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 is the local CPU wheel; it must be named exactly (any other spec pulls a CUDA build).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,build]'

test:
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

quickstart:
	$(BIN)/python experiments/train.py --flagfile=experiments/flagfiles/quickstart.flags --workdir=$(WORKDIR)
	$(BIN)/python experiments/eval.py --checkpoint=$(WORKDIR) --dataset=synthetic
	# A real photo: the bundled detector's keypoints, SMPLify from the regressor's
	# prediction and from the mean parameters, the better fit kept (README, Photos).
	$(BIN)/python experiments/demo.py --checkpoint=$(WORKDIR) --refine --img=spin_jax/assets/astronaut.jpg --out=$(WORKDIR)/demo

# On one GPU: bash experiments/device_check.sh (README, "On an accelerator");
# ARGS=--dry-run rehearses it on the CPU with tiny sizes.
device-check:
	PYTHON=$(BIN)/python bash experiments/device_check.sh $(ARGS)

clean-runs:
	rm -rf runs
