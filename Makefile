# Local development and CI entry points. Needs python3 (with venv), node and npm.
#   make run    Azurite + dev tenant + the app on http://127.0.0.1:$${PORT:-7071} (local emulator
#               only: storage elsewhere is refused unless SCIM_DEV_ALLOW_REMOTE=1)
#   make test   the test suite (Azurite is started by the tests themselves; Debian's chromium is
#               installed for the portal's browser tests when missing)
#   make lint   ruff (lint and format check) and mypy --strict on scim/ and devtools/ (pyproject.toml)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
NPM ?= npm
VENV := .venv
VPY := $(VENV)/bin/python
PYTEST_FLAGS ?= -q

VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

# The infrastructure checks (tests/test_infra.py) run pycep-parser and checkov from their own
# venv: checkov pins many packages (aiohttp, packaging, pydantic, ...) that conflict with
# requirements-dev.txt, and pip would otherwise resolve it to an old release. Bumping
# CHECKOV_VERSION renames the stamp, which reinstalls.
INFRA_VENV := .venv-infra
INFRA_PY := $(INFRA_VENV)/bin/python
CHECKOV_VERSION := 3.3.30
INFRA_STAMP := $(INFRA_VENV)/.installed-checkov-$(CHECKOV_VERSION)

.PHONY: venv venv-infra node_modules chromium run azurite test screenshots lint format clean clean-data

venv: $(VENV_STAMP)

$(VENV_STAMP): requirements.txt requirements-dev.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

venv-infra: $(INFRA_STAMP)

# pycep builds its parser tables on first use (about a minute) and caches them in TMPDIR:
# build them here, into the venv, where tests/test_infra.py points TMPDIR.
$(INFRA_STAMP):
	test -x $(INFRA_PY) || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_PY) -m pip install --disable-pip-version-check -q "checkov==$(CHECKOV_VERSION)" pycep-parser
	mkdir -p $(INFRA_VENV)/tmp
	TMPDIR="$(CURDIR)/$(INFRA_VENV)/tmp" $(INFRA_PY) -c 'import pycep; pycep.BicepParser()'
	rm -f $(INFRA_VENV)/.installed-checkov-*
	touch $@

node_modules: $(NODE_STAMP)

$(NODE_STAMP): package.json $(wildcard package-lock.json)
	if [ -f package-lock.json ]; then \
	  $(NPM) ci --no-audit --no-fund; \
	else \
	  $(NPM) install --no-audit --no-fund; \
	fi
	touch $@

# The portal's browser tests (tests/test_portal_browser.py) drive Debian's chromium with Playwright
# (Playwright's own browser download is not used: `playwright install` is never run). Installed
# here when missing, as root with apt-get (apt-get update only if the install fails without it);
# when it cannot be, this says why and the browser tests fail in CI (CI set) and skip elsewhere.
CHROMIUM := /usr/bin/chromium

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "make: $(CHROMIUM) is missing; install Debian's chromium (apt-get install chromium) for the browser tests" >&2; \
	  else \
	    echo "make: installing Debian's chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	      || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	      || echo "make: could not install chromium (apt-get failed); the browser tests cannot run" >&2; \
	  fi; \
	fi

run: venv node_modules
	@$(VPY) -m devtools.dev

# Azurite alone (Blob, Queue and Table on 10000-10002, data in .azurite/), until Ctrl-C.
azurite: venv node_modules
	$(VPY) -m devtools.azurite --all

# Any non-zero pytest exit fails the target, 5 ("no tests ran") included.
test: venv node_modules venv-infra chromium
	$(VPY) -m pytest $(PYTEST_FLAGS)

# The README's screenshots (docs/screenshots/): the browser tests, saving what they see there
# (make test saves it into .local/screenshots/, leaving the working tree as it was).
screenshots: venv node_modules chromium
	SCREENSHOTS_DIR=docs/screenshots $(VPY) -m pytest tests/test_portal_browser.py -q

# Lint: ruff's rules and formatting, mypy --strict; zero findings, in CI before the tests.
lint: venv
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .
	$(VPY) -m mypy

# Apply ruff's formatting and its safe fixes.
format: venv
	$(VPY) -m ruff format .
	$(VPY) -m ruff check --fix .

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

# Local Azurite data (tenants and users of `make run`): every local tenant, user and group is
# deleted. `make run` prints the size of .azurite/ at start and suggests this above 50 MiB, where
# Azurite's whole-database saves slow every request. Stop `make run` (and `make azurite`) first.
clean-data:
	rm -rf .azurite

# Entra replay benchmark against the local host on a fresh in-memory Azurite (docs/performance.md).
#   make bench BENCH_ARGS="--users 10000 --big-group 0"
#   make bench BENCH_ARGS="--tenants 5 --users 300"    # 5 tenants at once, p50/p99 and req/s per tenant
.PHONY: bench
bench: venv node_modules
	$(VPY) -m bench $(BENCH_ARGS)
