# clickrec: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `sudo` only when not root (CI and the dev machines run as root).
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Docker path when an engine answers and compose is there; the native processes otherwise.
DOCKER := $(shell docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 && echo yes)
CLICKREC := $(BIN)/clickrec

.PHONY: help install up down status demo test replay synth bench bench-deps clean system-deps

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

system-deps: ## Install the system packages the native stack and tests need (redis-server, a JDK for Spark, gcc, chromium)
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	  else \
	    echo "please install:$$missing (no apt-get here)"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: system-deps $(STAMP) ## Create .venv and install clickrec with its dependencies

up: install ## Run the stack (Docker if an engine answers, else native processes) and seed demo data
ifeq ($(DOCKER),yes)
	docker compose up -d --wait
	@echo "stack up with Docker; demo data is replayed by the 'demo' service (docker compose logs demo)"
else
	$(CLICKREC) up
endif

down: ## Stop exactly what `make up` started
ifeq ($(DOCKER),yes)
	docker compose down
else
	@[ -x $(CLICKREC) ] && $(CLICKREC) down || echo "nothing to stop (no .venv yet)"
endif

status: ## Show each service, its PID and health (a crashed one too)
ifeq ($(DOCKER),yes)
	docker compose ps
else
	$(CLICKREC) status
endif

SAMPLE := ../shared/data/opencdp-2019-Oct-head.csv
demo: up ## Replay a dataset into the running stack as if live: the real sample if beside the repo, else synthetic
	@if [ -f "$(SAMPLE)" ]; then $(CLICKREC) replay "$(SAMPLE)" --rebase-time now; \
	else $(CLICKREC) synth -o data/demo/synth-demo.csv --users 2000 --days 1 && \
	     $(CLICKREC) replay data/demo/synth-demo.csv --rebase-time now; fi

replay: install ## Replay a click CSV into Kafka: make replay FILE=path.csv [ARGS="--rebase-time now"]
	@[ -n "$(FILE)" ] || { echo "usage: make replay FILE=path/to/2019-Oct.csv [ARGS='--rebase-time now --speedup 60']"; exit 2; }
	$(CLICKREC) replay "$(FILE)" $(ARGS)

synth: install ## Write a synthetic OpenCDP CSV: make synth OUT=data/synth.csv [ARGS="--users 100000 --days 7"]
	$(CLICKREC) synth -o "$(or $(OUT),data/synth.csv)" $(ARGS)

test: install ## Run the whole test suite (starts its own services on free ports)
	$(BIN)/pytest

bench-deps: ## Install what the benchmarks need beyond the tests (wrk, the C load generator)
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }

bench: install bench-deps ## Run every benchmark in bench/ and record its results (long: about an hour)
	$(BIN)/python -m bench.replay_throughput
	$(BIN)/python -m bench.stream
	$(BIN)/python -m bench.als_training
	$(BIN)/python -m bench.analytics
	$(BIN)/python -m bench.api_latency

clean: down ## Stop the stack and remove generated data, logs and the virtualenv
	rm -rf .run data $(VENV)
