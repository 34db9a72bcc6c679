# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK := deploy/local/stack.sh

export LOCAL_KAFKA_PORT ?= 19092
export LOCAL_PG_PORT ?= 55432
export LOCAL_PROMETHEUS_PORT ?= 19090
export KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:$(LOCAL_KAFKA_PORT)
# One DSN per database role (docs/configuration.md); the passwords are the local stack's, local-only.
PG_AT := 127.0.0.1:$(LOCAL_PG_PORT)
export DATABASE_URL ?= postgresql://recovery_worker:worker-local-only@$(PG_AT)/order_recovery
export DATABASE_OWNER_URL ?= postgresql://recovery_owner:owner-local-only@$(PG_AT)/order_recovery
export DATABASE_READER_URL ?= postgresql://recovery_reports:reports-local-only@$(PG_AT)/order_recovery
export DATABASE_OPERATOR_URL ?= postgresql://recovery_operator:operator-local-only@$(PG_AT)/order_recovery
# The cluster's superuser: only the tests and the bench use it, to make scratch databases.
export DATABASE_ADMIN_URL ?= postgresql://postgres:admin-local-only@$(PG_AT)/postgres
PYTEST_ARGS ?=

.PHONY: help venv lock up down status run test fuzz lint bench chaos clean dashboard dashboard-png

help:
	@echo "make run     start Kafka + Postgres + Prometheus, create topics, migrate (owner role), run the worker (worker role; Ctrl-C stops it)"
	@echo "make test    start what the tests need, run pytest, stop what it started"
	@echo "make up | down | status   the local services only"
	@echo "make fuzz    hypothesis over bad input, many more examples than make test (FUZZ_EXAMPLES)"
	@echo "make lint    ruff"
	@echo "make lock    re-resolve requirements/*.txt (hashed pins) from pyproject.toml (LOCK_ARGS=--upgrade: newest)"
	@echo "make bench   throughput benchmark"
	@echo "make chaos   fault campaign: kills, pauses, crashes and rebalances under a feed (minutes)"
	@echo "make dashboard   write deploy/grafana/dashboards/order-recovery.json from deploy/grafana/dashboard.py"
	@echo "make dashboard-png   render docs/img/recovery-rate.png from a real Prometheus (known mix)"

# Locked dependencies (docs/development.md#dependencies): every package, with its hashes, comes from
# requirements/*.txt, which `make lock` writes from pyproject.toml. pip installs a lock without
# --no-deps so that it refuses a lock missing a dependency; only the project itself, built here, goes
# in with --no-deps. Wheels only: nothing is compiled, so no unhashed build dependency sneaks in.
LOCK_DIR := requirements
LOCKS := $(LOCK_DIR)/build.txt $(LOCK_DIR)/runtime.txt $(LOCK_DIR)/dev.txt
PIP_LOCKED := $(BIN)/python -m pip install -q --require-hashes --only-binary :all:

$(VENV)/.installed: pyproject.toml $(LOCKS)
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r $(LOCK_DIR)/build.txt
	$(PIP_LOCKED) -r $(LOCK_DIR)/dev.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check -q
	@touch $@

venv: $(VENV)/.installed

# The locks are resolved with uv (docs/development.md says why) for the Python the project runs on,
# here and in the Dockerfile's image, on Linux x86_64. uv lives in a venv of its own, so that `make
# lock` works even when the project's venv or a lock is broken (a merge conflict in a lock: run it).
# Existing pins are kept unless LOCK_ARGS says otherwise: `make lock LOCK_ARGS=--upgrade` moves every
# package to its newest allowed version, `LOCK_ARGS='--upgrade-package ruff'` one of them.
LOCK_PYTHON := 3.11
UV_VERSION := 0.13.9
LOCK_TOOLS := .local/lock-tools
UV := $(LOCK_TOOLS)/bin/uv
LOCK_ARGS ?=
UV_COMPILE = $(UV) pip compile --quiet --generate-hashes --only-binary :all: \
	--python-version $(LOCK_PYTHON) --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command 'make lock' $(LOCK_ARGS)

$(LOCK_TOOLS)/.uv-$(UV_VERSION):
	@[ -x $(LOCK_TOOLS)/bin/python ] || $(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install -q uv==$(UV_VERSION)
	@touch $@

# runtime <- pyproject's dependencies; dev <- the same plus the `dev` extra, held to the runtime pins;
# build <- pyproject's [build-system] requires (setuptools, wheel) plus pip, held to the dev pins.
lock: $(LOCK_TOOLS)/.uv-$(UV_VERSION)
	$(UV_COMPILE) pyproject.toml -o $(LOCK_DIR)/runtime.txt
	$(UV_COMPILE) pyproject.toml --extra dev -c $(LOCK_DIR)/runtime.txt -o $(LOCK_DIR)/dev.txt
	$(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], "pip", sep="\n")' \
	  | $(UV_COMPILE) - -c $(LOCK_DIR)/dev.txt -o $(LOCK_DIR)/build.txt

up:
	@$(STACK) up

down:
	@$(STACK) down

status:
	@$(STACK) status

# The sample feed runs beside the worker so decisions and metrics move at once (SAMPLE_RATE=0: off);
# the lifecycle process and the reference platform beside them move the cases to their end
# (logs in .local/logs/).
SAMPLE_RATE ?= 20
run: venv up
	$(BIN)/recoveryctl topics create
	$(BIN)/recoveryctl db migrate
	@echo "worker starting; Ctrl-C stops it, 'make down' stops Kafka, Postgres and Prometheus"
	@echo "recovery rate: http://127.0.0.1:$(LOCAL_PROMETHEUS_PORT)/classic/graph?g0.expr=platform%3Aorder_recovery_recovered%3Aratio_rate5m&g0.tab=0&g0.range_input=15m&g1.expr=event_type%3Aorder_recovery_recovered%3Aratio_rate5m&g1.tab=0&g1.range_input=15m"
	@if [ "$(SAMPLE_RATE)" != 0 ]; then \
	  echo "sample feed: $(SAMPLE_RATE) events/s (log .local/logs/sample-feed.log)"; \
	  $(BIN)/recoveryctl produce-sample --count 0 --rate $(SAMPLE_RATE) --live \
	    >.local/logs/sample-feed.log 2>&1 & feeder=$$!; \
	fi; \
	$(BIN)/recovery-lifecycle >.local/logs/lifecycle.log 2>&1 & lifecycle=$$!; \
	$(BIN)/recoveryctl simulate-platform >.local/logs/platform.log 2>&1 & platform=$$!; \
	trap 'kill $$lifecycle $$platform $$feeder 2>/dev/null' EXIT; \
	$(BIN)/recovery-worker

# Stops only the services this run started (a developer's own `make up` stays up), pass or fail.
test: venv
	@started=$$(mktemp); \
	trap '$(STACK) down --from "$$started"; rm -f "$$started"' EXIT; \
	$(STACK) up --record "$$started" && $(BIN)/pytest $(PYTEST_ARGS)

# The fuzz tests (marker `fuzz`: the decoder over raw bytes and near-valid documents, the pipeline
# with the real Kafka and Postgres) under the hypothesis profile `fuzz`: FUZZ_EXAMPLES examples per
# test (default 2000: about half a minute here) instead of the few hundred `make test` runs.
fuzz: venv
	@started=$$(mktemp); \
	trap '$(STACK) down --from "$$started"; rm -f "$$started"' EXIT; \
	$(STACK) up --record "$$started" kafka postgres && \
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -m fuzz $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check services tests bench deploy
	$(BIN)/ruff format --check services tests bench deploy

# Throughput and latency against the raw floors of the same broker and database (see bench/run.py;
# BENCH_EVENTS, BENCH_REPEAT, BENCH_LATENCY_S). Starts the stack if needed; leaves it up.
bench: venv
	@$(STACK) up kafka postgres
	$(BIN)/python bench/run.py
	$(BIN)/python bench/contract.py

# The fault campaign (tests/chaos, docs/reliability.md): real workers against the local stack, whose
# Postgres and Kafka it kills and restarts, so nothing else should use the stack meanwhile. Starts
# the stack if needed; leaves it up. Exit 1 if any invariant broke. CHAOS_SEED may list several
# seeds (run in a row); CHAOS_ARGS passes anything else (python -m tests.chaos --help).
CHAOS_SEED ?= 1
CHAOS_RUNTIME ?= confluent
CHAOS_EVENTS ?= 20000
CHAOS_KILLS ?= 20
CHAOS_ARGS ?=
chaos: venv
	@$(STACK) up kafka postgres
	$(BIN)/python -m tests.chaos --seed $(CHAOS_SEED) --runtime $(CHAOS_RUNTIME) \
	  --events $(CHAOS_EVENTS) --kills $(CHAOS_KILLS) $(CHAOS_ARGS)

# The Grafana dashboard is generated: change deploy/grafana/dashboard.py (panels) or queries.py
# (PromQL), then write the JSON that compose provisions (a unit test fails while the two differ).
dashboard: venv
	$(BIN)/python -m deploy.grafana.dashboard

# The recovery-rate PNG of docs/observability.md: the real worker and a Prometheus of its own, fed a
# known mix (about two minutes). Starts the services it needs and stops only those it started.
dashboard-png: venv
	@started=$$(mktemp); \
	trap '$(STACK) down --from "$$started"; rm -f "$$started"' EXIT; \
	$(STACK) up --record "$$started" kafka postgres prometheus && \
	$(BIN)/python deploy/prometheus/render_recovery_rate.py --out docs/img/recovery-rate.png

clean: down
	rm -rf .local/kafka/data .local/pg .local/pgsock .local/prometheus .local/logs
