# ppml-operator: the two commands a new user runs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: help setup tools devcluster-up devcluster-down demo test test-unit test-integration \
        test-e2e generate verify lint bench clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

setup: ## Python environment (cached outside the repo, linked as .venv)
	@scripts/setup-venv.sh

tools: ## Kubernetes binaries, etcd and helm (built from the official Go modules, cached by version)
	@devcluster/scripts/build-tools.sh >/dev/null

devcluster-up: setup tools ## Start the one-machine Kubernetes cluster (idempotent)
	@$(PY) -m devcluster up

devcluster-down: ## Stop devcluster and everything it started
	@if [ -x $(PY) ]; then $(PY) -m devcluster down; fi

demo: setup tools ## devcluster + operator + the example jobs, then a summary
	@scripts/demo.sh

test: setup tools ## Unit, integration and e2e tiers (starts and stops devcluster)
	@scripts/test.sh

test-unit: setup ## Unit tier only (no cluster)
	@$(PY) -m pytest tests/unit -q -n 2

test-integration: setup tools ## Integration tier (devcluster)
	@scripts/test.sh integration

test-e2e: setup tools ## End-to-end tier (devcluster)
	@scripts/test.sh e2e

generate: setup ## Regenerate CRDs, the chart's CRD copies and the API reference
	@scripts/generate.sh

verify: generate ## Regenerate and fail on any drift
	@git diff --exit-code -- crds charts/ppml-operator/templates/crds docs/api-reference.md \
	  || { echo "Generated files drifted: run 'make generate' and commit the result" >&2; exit 1; }

lint: setup ## ruff, mypy (strict on the operator), import-linter
	@$(PY) -m ruff check .
	@$(PY) -m mypy operator/src/ppml_operator
	@.venv/bin/lint-imports

bench: setup tools ## Benchmarks (ratios measured side by side; JSON under benchmarks/results/)
	@scripts/bench.sh

clean: devcluster-down ## Remove local state (not the caches)
	rm -rf .devcluster .pytest_cache .mypy_cache .ruff_cache
