# `make quickstart` and `make test` each set up .venv (once) and then do their job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test lint clean browser

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(BIN)/compress run recipes/quickstart.yaml

# Headless Chromium checks report.html; installed from Debian's packages where apt is available.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ; } || \
	  echo "chromium not installed: the report.html browser test will be skipped"

test: setup browser
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check compress tests
	$(BIN)/ruff format --check compress tests

clean:
	rm -rf $(VENV) reports/*/
