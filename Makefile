# Developer entry points. `make` (or `make help`) lists the targets.
#
# Targets that need a database run under scripts/pg-ephemeral, which starts a
# throw-away PostgreSQL cluster, exports DATABASE_URL (and
# AUTOPILOT_TEST_DATABASE_URL) for the command and removes the cluster after.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Use the lock file when there is one (CI always has it).
LOCKED := $(if $(wildcard Cargo.lock),--locked,)
# Extra arguments for `cargo test`, e.g. make test TEST_ARGS='--test it orders:: -- --nocapture' (one integration binary, tests/it)
TEST_ARGS ?=
PG_EPHEMERAL := scripts/pg-ephemeral

.PHONY: help build test lint fmt demo bench clean

help: ## List the targets (default)
	@echo 'Usage: make TARGET [TEST_ARGS=...]'
	@echo
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "} {printf "  %-8s %s\n", $$1, $$2}'

build: ## Build the release binary (target/release/autopilot)
	$(CARGO) build --release $(LOCKED)

# Compile first (--no-run) so the database does not sit idle during the build.
test: ## Compile the tests, then run them against an ephemeral PostgreSQL (TEST_ARGS passed to cargo test)
	$(CARGO) test $(LOCKED) --no-run $(TEST_ARGS)
	$(PG_EPHEMERAL) --pgbouncer $(CARGO) test $(LOCKED) --no-fail-fast $(TEST_ARGS)

lint: ## Check formatting and run clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets $(LOCKED) -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

demo: build ## Build, then run scripts/demo (migrate, demo data, agent commands) on an ephemeral PostgreSQL
	$(PG_EPHEMERAL) scripts/demo

bench: build ## Build, then run scripts/bench on an ephemeral PostgreSQL
	$(CARGO) build --release $(LOCKED) --example lease_burst
	$(PG_EPHEMERAL) scripts/bench

clean: ## Remove build artefacts (cargo clean)
	$(CARGO) clean
