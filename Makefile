# `make quickstart` and `make test` each set up .venv (once) and then do their job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test lint clean system-tools

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(BIN)/compress run recipes/quickstart.yaml

# Headless Chromium checks report.html (driven by Playwright, installed from requirements-dev.txt) and a
# real sshd on loopback plays a remote device; both come from Debian's packages where apt is available
# (tests that need them skip otherwise).
APT_INSTALL = command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
system-tools:
	@{ command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } && [ -x /usr/sbin/sshd ] || \
	  { $(APT_INSTALL) chromium openssh-server >/dev/null; } ; } || \
	  echo "chromium or openssh-server not installed: the report.html and remote-target tests will be skipped"

test: setup system-tools
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check compress tests
	$(BIN)/ruff format --check compress tests

clean:
	rm -rf $(VENV) reports/*/
