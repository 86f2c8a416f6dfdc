# The two set-up commands of the README. Both install what is missing first.
VENV := $(shell scripts/bootstrap.sh)
PY := $(VENV)/bin/python
MAIN_RUN ?= run --method moco --task mimic-cls

.PHONY: run test test-slurm lint
run:
	$(PY) -m harness $(MAIN_RUN)

test:
	$(PY) -m pytest -q

# a real single-node Slurm (slurm-wlm + munge from Debian, installed if missing): run and sweep through it
test-slurm:
	$(PY) -m pytest -q -m slurm

lint:
	$(VENV)/bin/ruff check harness baselines tests
