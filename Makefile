# cognito-reset: every task a person or CI runs. Tools are installed into .tools/ (git-ignored)
# from the package registries, at the versions pinned in tools/requirements-*.txt.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
TOOLS := .tools
STACK_VENV := $(TOOLS)/stack
STACK_BIN := $(abspath $(STACK_VENV)/bin)
CARGO_LOCKED := --locked

.PHONY: help test lint fmt fmt-check clippy unit bench tools

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

## ---- tools -------------------------------------------------------------------------------

$(STACK_VENV)/.installed: tools/requirements-stack.txt
	rm -rf $(STACK_VENV)
	$(PYTHON) -m venv $(STACK_VENV)
	$(STACK_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

tools: $(STACK_VENV)/.installed ## install the pinned local-stack tools into .tools/

## ---- build, lint, unit tests -----------------------------------------------------------------

fmt: ## format the code
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy $(CARGO_LOCKED) --all-targets -- -D warnings

lint: fmt-check clippy ## rustfmt check and clippy -D warnings

unit: ## unit, property and CLI tests (cargo test)
	cargo test $(CARGO_LOCKED) --all-targets

bench: ## criterion benchmarks
	cargo bench $(CARGO_LOCKED)

test: lint unit ## every test: lint, unit, end-to-end, template checks

## ---- local stack: demo, hand testing, end-to-end tests (issue 4) ---------------------------
# moto server (local Cognito) and the real function under `cargo lambda watch`, on free loopback
# ports, driven by tools/stack.py; everything it starts is stopped on exit, failure and Ctrl-C.
# The function is built first so that watch starts it warm.

.PHONY: demo local invoke e2e

STACK_PY := $(STACK_VENV)/bin/python
EVENT ?=

demo: $(STACK_VENV)/.installed ## run the function against a local Cognito, send the sample events, print a table
	cargo build $(CARGO_LOCKED) --bin cognito-reset
	$(STACK_PY) tools/stack.py demo

local: $(STACK_VENV)/.installed ## keep the local stack running for hand testing (Ctrl-C stops it)
	cargo build $(CARGO_LOCKED) --bin cognito-reset
	$(STACK_PY) tools/stack.py local

invoke: ## send one event to the running `make local` stack: make invoke EVENT=events/http-api-v2.json
	@if [ -z "$(EVENT)" ]; then echo "usage: make invoke EVENT=events/http-api-v2.json" >&2; exit 2; fi
	$(STACK_PY) tools/stack.py invoke $(EVENT)

e2e: $(STACK_VENV)/.installed ## end-to-end tests: the real binary under cargo lambda watch, against moto
	cargo build $(CARGO_LOCKED) --bin cognito-reset
	$(STACK_PY) -m pytest -p no:cacheprovider -ra tests/e2e
