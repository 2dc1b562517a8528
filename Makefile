# The two commands of the README: `make demo` runs visa, `make test` runs the tests.
.PHONY: setup setup-dev demo test test-fast lint bench image docs

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev

demo: setup
	.venv/bin/visa demo

test: setup-dev
	.venv/bin/ruff check visa tests bench
	$(MAKE) docs
	.venv/bin/python -m pytest -q --durations=30

# The documentation site in build/site: reference pages generated from the code, built with
# warnings as errors, then every internal link and anchor checked offline.
docs: setup-dev
	.venv/bin/python scripts/docs_reference.py
	.venv/bin/mkdocs build --strict
	.venv/bin/python scripts/check_site_links.py build/site

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
