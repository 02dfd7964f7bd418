# The commands a person types. `make up` and `make test` work on a fresh machine.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: up test install lint bench loadtest history workers clean

up: install ## install everything, then run the service on its embedded defaults
	.venv/bin/docpipe up

test: install ## install what is missing, then run the whole test suite
	.venv/bin/pytest $(PYTEST_ARGS)

install:
	@scripts/install-system-deps
	@$(UV) sync --frozen --quiet
	@.venv/bin/python -m compileall -q docpipe tasks flows deployments loadtest >/dev/null

bench: install ## bare Tesseract vs the whole pipeline on the same pages (BENCH_ARGS="--pages 100")
	.venv/bin/python -m loadtest.bench $(BENCH_ARGS)

loadtest: install ## Locust + VIP/standard scenarios + memory check; writes loadtest/results/
	.venv/bin/python -m loadtest.run $(LOADTEST_ARGS)

history: install ## a request's and a batch's cost, fresh and with 10,000 documents of history
	.venv/bin/python -m loadtest.history $(HISTORY_ARGS)

workers: install ## a 40-page batch on one one-core worker, then shared by two (WORKERS_ARGS)
	.venv/bin/python -m loadtest.workers $(WORKERS_ARGS)

lint: install ## style, types, and the layers: imports point one way (contracts in pyproject.toml)
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports \
		&& .venv/bin/mypy docpipe tasks flows deployments tests loadtest examples

clean: ## remove local state (the default DOCPIPE_HOME)
	rm -rf var
