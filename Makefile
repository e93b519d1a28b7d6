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
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

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
