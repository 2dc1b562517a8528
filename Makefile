# The two commands of the README: `make demo` runs visa, `make test` runs the tests.
.PHONY: setup setup-dev demo test test-fast lint bench

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev

demo: setup
	.venv/bin/visa demo

test: setup-dev
	.venv/bin/ruff check visa tests bench
	.venv/bin/python -m pytest -q

test-fast: setup-dev
	.venv/bin/python -m pytest -q -m "not integration"

lint: setup-dev
	.venv/bin/ruff check visa tests bench
	.venv/bin/ruff format --check visa tests bench

bench: setup-dev
	.venv/bin/python -m bench
