# Relay: `make demo` and `make test` are all a newcomer needs; both run `make setup` first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)
export OMP_NUM_THREADS ?= 1
export RELAY_HOME ?= $(HOME)/.relay

.PHONY: help setup demo test test-fast bench airflow s3 lock clean-home

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup:  ## Build (or reuse) the pinned Python environment; seconds when nothing changed
	@scripts/setup-venv.sh

demo: setup  ## Run the digits DAG through Airflow and leave the model served by the V2 server
	@scripts/demo.sh

# Test processes (pytest-xdist), each taking whole files: a module's servers and its tests' order stay together.
TEST_PROCESSES ?= 2

test: setup  ## Run the whole test suite (unit, data, model and end-to-end DAG tests); TEST_PROCESSES=2
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile --durations=20

test-fast: setup  ## Run the unit and contract tests (no training, no Airflow, no model server): a few minutes
	$(PY) -m pytest -m "not slow" --durations=10

bench: setup  ## Measure speed figures; prints a table and writes bench/results.json
	$(PY) -m bench.run

airflow: setup  ## Start Airflow's servers on 127.0.0.1 (UI with the Params form); EXECUTOR=celery: Redis + 2 workers
	@bin/relay airflow --executor $(or $(EXECUTOR),local)

s3: setup  ## Start a real S3 server (moto, IAM auth on) on 127.0.0.1 and print the environment that uses it
	$(PY) -m pipelines.local_s3

lock: ## Re-resolve requirements/*.in into main.lock (pip) and tfx.lock (uv)
	@scripts/lock.sh
