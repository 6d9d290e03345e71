# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps what it needs:
# uv (installed with pip if missing), then the locked environment (uv.lock).
SHELL := /bin/bash
UV = $(shell command -v uv >/dev/null 2>&1 && echo uv || echo python3 -m uv)

.PHONY: bootstrap demo test lint fmt bench-limiter bench-store bench-account bench-history bench-stream

bootstrap:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --locked --quiet

demo: bootstrap
	$(UV) run krakked demo

test: bootstrap
	@bash scripts/ensure-postgres
	@bash scripts/ensure-chromium
	$(UV) run ruff check src tests bench
	$(UV) run lint-imports
	$(UV) run pytest --cov=krakked --cov-report=term-missing --cov-fail-under=80

lint: bootstrap
	$(UV) run ruff check src tests bench
	$(UV) run lint-imports

fmt: bootstrap
	$(UV) run ruff check --fix src tests bench

bench-limiter: bootstrap
	$(UV) run python bench/limiter.py

bench-store: bootstrap
	$(UV) run python bench/store.py

bench-account: bootstrap
	$(UV) run python bench/account.py

# pandas and polars (the lock's optional extras) are what krakked is compared with here
bench-history: bootstrap
	$(UV) sync --locked --quiet --extra pandas --extra polars
	$(UV) run python bench/history.py

bench-stream: bootstrap
	$(UV) run python bench/stream.py
