# The two commands of the README: `make demo` runs visa, `make test` runs the tests.
.PHONY: setup setup-dev demo test test-fast lint bench image

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev

demo: setup
	.venv/bin/visa demo

test: setup-dev
	.venv/bin/ruff check visa tests bench
	.venv/bin/python -m pytest -q --durations=30

test-fast: setup-dev
	.venv/bin/python -m pytest -q -m "not integration"

lint: setup-dev
	.venv/bin/ruff check visa tests bench
	.venv/bin/ruff format --check visa tests bench

bench: setup-dev
	.venv/bin/python -m bench

# visa's own cloud image (images/recipes, Debian 12 via debootstrap), cached by the recipe's hash.
image:
	python3 images/recipes/build.py $(or $(ENV),sandbox)
