# rill — run `make help` for the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHON := $(abspath $(PY))

.DEFAULT_GOAL := help

help: ## Show the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create the virtualenv with rill and its dev tools

HELM_VERSION ?= v3.16.4
# Built once per machine, cached outside the checkout and linked into .rill/bin.
.rill/bin/helm: deploy/local/gotool.sh
	HELM_VERSION=$(HELM_VERSION) deploy/local/gotool.sh helm

.rill/bin/promtool: deploy/local/gotool.sh
	deploy/local/gotool.sh promtool

tools: .rill/bin/helm .rill/bin/promtool ## Build helm and promtool (chart and alert-rule tests), once per machine

up: install ## Start local Kafka (KRaft) and Redis on 127.0.0.1 (no-op when running)
	deploy/local/stack.sh up

down: ## Stop local Kafka and Redis
	deploy/local/stack.sh down

k8s-up: ## Local Kubernetes control plane + kwok node, built from source once (no-op when up)
	deploy/local/k8s/cluster.sh up

k8s-down: ## Stop the local Kubernetes control plane and drop its state (keeps the binaries)
	deploy/local/k8s/cluster.sh down

demo: up ## Run the service end to end on the demo pipeline and show results and metrics
	deploy/local/demo.sh

lint: install ## ruff (lint + format check) and mypy --strict
	$(PY) -m ruff check service tests bench
	$(PY) -m ruff format --check service tests bench
	$(PY) -m mypy service

format: install ## Sort imports, fix what ruff can, and format (ruff)
	$(PY) -m ruff check --fix service tests bench
	$(PY) -m ruff format service tests bench

docs: install ## Regenerate docs/configuration.md from the settings' declarations
	$(PY) -m service.config.reference > docs/configuration.md

unit: install ## The unit tier alone: no network, no helm, well under a minute
	$(PY) -m pytest tests/unit -q

chart: install tools ## The chart tier: helm lint/template of deploy/helm (builds helm once, make tools)
	$(PY) -m pytest tests/chart -q

# The unit tier alone must cover the runtime core (the seams make it testable without I/O).
UNIT_COVERAGE := --cov=service/runtime --cov=service/processing --cov-report=term --cov-fail-under=80

# The integration tier's files on three xdist workers (its tests mostly wait on the broker
# and worker processes; tests/conftest.py keeps each file on one worker). The k8s tier runs
# after it, alone: its closed loop measures replicas against a rate of the machine.
INTEGRATION_WORKERS := -n 3 --dist loadgroup --durations=10

test: lint tools up k8s-up ## Lint, then the unit, chart, integration and k8s tiers (real broker, Redis, control plane)
	$(PY) -m pytest tests/unit $(UNIT_COVERAGE)
	$(PY) -m pytest tests/chart
	set -a; source .rill/local.env; set +a; $(PY) -m pytest tests/integration $(INTEGRATION_WORKERS)
	set -a; source .rill/local.env; set +a; $(PY) -m pytest tests/k8s

chaos: install ## Process-level fault suite on its own broker + Redis; writes tests/chaos/results.md
	RILL_CHAOS=1 $(PY) -m pytest tests/chaos -p no:cacheprovider

# The live rows again and again: SOAK_RUNS runs of each row in a row (both modes), each
# feed SOAK_CYCLES bursts long (`make soak SOAK_CYCLES=12` for a longer variant).
SOAK_RUNS ?= 3
SOAK_CYCLES ?= 2
soak: install ## Live-traffic chaos rows SOAK_RUNS (3) times in a row -> tests/chaos/soak.md
	RILL_CHAOS=1 RILL_CHAOS_RUNS=$(SOAK_RUNS) RILL_CHAOS_LIVE_CYCLES=$(SOAK_CYCLES) \
		RILL_CHAOS_RESULTS=$(abspath tests/chaos/soak.md) \
		$(PY) -m pytest tests/chaos -p no:cacheprovider -k live

.PHONY: chaos soak

MODE ?= keda
autoscale-demo: tools up k8s-up ## Closed loop: a ramp, real workers on the chart's pods, KEDA (or MODE=hpa) scaling; trace + plot
	set -a; source .rill/local.env; set +a; $(PY) -m tests.k8s.autoscale_demo --mode $(MODE)

.PHONY: autoscale-demo

# Quix Streams pins an older confluent-kafka: the bench gets a venv of its own (rill + the
# `bench` extra), so every system in it runs on the same librdkafka.
BENCH_VENV ?= .rill/bench-venv
$(BENCH_VENV)/.installed: pyproject.toml
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -e '.[bench]'
	touch $@

BENCH_ARGS ?=
bench: up $(BENCH_VENV)/.installed ## Floor, rill and Quix Streams side by side -> bench/results/ (BENCH_ARGS=--quick)
	set -a; source .rill/local.env; set +a; $(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS) && $(BENCH_VENV)/bin/python bench/decode.py

PROFILE_ARGS ?=
profile: up $(BENCH_VENV)/.installed ## One windowed worker under py-spy -> bench/results/flame-*.svg, profile.md
	set -a; source .rill/local.env; set +a; $(BENCH_VENV)/bin/python bench/profile.py $(PROFILE_ARGS)

.PHONY: help install tools up down k8s-up k8s-down demo lint format docs unit chart test bench profile
