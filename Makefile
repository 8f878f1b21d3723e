# The two commands a newcomer needs: `make run` and `make test`. Each installs what it
# needs first (a virtualenv with the Python packages, kcat from Debian; Kafka's jars
# come from Maven Central the first time the dev clusters start).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: install system-deps run test test-unit test-integration lint typecheck fmt bench clean dev-down

install: $(STAMP) system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# kcat is one of the real clients the integration tests drive; Java 17 and Maven run
# the local Kafka clusters.
system-deps:
	@command -v kcat >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq kcat; }
	@command -v java >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq openjdk-17-jre-headless; }
	@command -v mvn  >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq maven; }

## Local primary + secondary Kafka clusters and the gateway in front of them (Ctrl-C stops all).
run: install
	$(BIN)/python -m gateway dev run

## Lint, type-check, then unit and integration tests against real Kafka brokers.
test: install lint typecheck
	$(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest -p no:cacheprovider tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/pytest -p no:cacheprovider tests/integration $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check gateway tests
	$(BIN)/ruff format --check gateway tests
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix gateway tests
	$(BIN)/ruff format gateway tests

## Throughput and latency, direct to Kafka vs through the gateway, in one run.
bench: install
	$(BIN)/python -m tests.perf.bench

dev-down: install
	$(BIN)/python -m gateway dev down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
