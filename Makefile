# The two commands of the README: `make demo` runs visa, `make test` runs the tests.
.PHONY: setup setup-dev demo test test-fast lint format-check deps-check bench image docs

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev

demo: setup
	.venv/bin/visa demo

test: setup-dev
	.venv/bin/ruff check visa tests bench
	.venv/bin/mypy visa
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
	.venv/bin/mypy visa

# The tree is not formatted by ruff's formatter (its diff touches most files): not part of lint.
format-check: setup-dev
	.venv/bin/ruff format --check visa tests bench

# The newest versions pyproject allows, in a throwaway virtualenv (requirements.lock ignored): what
# changed and whether the modules import and a quick subset of the tests pass. Run on a schedule.
deps-check:
	scripts/deps-check.sh

bench: setup-dev
	.venv/bin/python -m bench

# visa's own cloud image (images/recipes, Debian 12 via debootstrap), cached by the recipe's hash.
image:
	$(or $(wildcard .venv/bin/python),python3) images/recipes/build.py $(or $(ENV),sandbox)
