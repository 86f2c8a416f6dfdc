# The two set-up commands of the README. Both install what is missing first.
VENV := $(shell scripts/bootstrap.sh)
PY := $(VENV)/bin/python
MAIN_RUN ?= run --method moco --task mimic-cls

.PHONY: run test lint
run:
	$(PY) -m harness $(MAIN_RUN)

test:
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check harness baselines tests
