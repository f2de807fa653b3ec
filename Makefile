# OTRS Bridge: `make run` brings up the console, the workers and the OTRS simulator;
# `make test` runs the whole suite (SQLite, then PostgreSQL when TEST_DATABASE_URL or
# DATABASE_URL points at one).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test bench screenshots lint format check chromium node-deps demo clean

# pip shows what it collects and installs: the first install takes a minute or more.
$(VENV)/.installed: pyproject.toml
	@echo "==> Creating $(VENV) and installing the project into it (a minute or two the first time)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install --progress-bar on -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	@echo "==> Installing the test tools into $(VENV)"
	$(PY) -m pip install --progress-bar on -e ".[test]"
	touch $@

# Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium; it never
# downloads a browser of its own).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The npm packages the tests run (tests/node/package.json: axe-core for the accessibility
# check, a real OpenID Connect provider for the single sign-on tests), into
# tests/node/node_modules, which git ignores.
node-deps: tests/node/node_modules/.installed

tests/node/node_modules/.installed: tests/node/package.json tests/node/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  echo "Installing Debian's nodejs and npm for the test suite"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: $(VENV)/.installed
	@echo "==> Migrating the database"
	DEBUG=True $(PY) manage.py migrate --noinput
	@echo "==> Collecting static files"
	DEBUG=True $(PY) manage.py collectstatic --noinput -v0
	@echo "==> Loading the demo data"
	DEBUG=True $(PY) manage.py load_demo

# honcho answers Ctrl-C by stopping every process and exiting with 130: the normal way to
# stop, not an error for make to report. otrsbridge.foreground gives honcho the terminal,
# so the Ctrl-C reaches honcho alone (make would report it as an interrupt) and ends in 0.
run: demo
	@echo
	@echo "  Console:        http://127.0.0.1:8000/        (setup: http://127.0.0.1:8000/admin/)"
	@echo "  OTRS simulator: http://127.0.0.1:8089/        (play the OTRS agent here)"
	@echo "  Stop everything with one Ctrl-C."
	@echo
	DEBUG=True $(PY) -m otrsbridge.foreground $(VENV)/bin/honcho start -f Procfile

test: $(VENV)/.installed-test chromium node-deps
	env -u DATABASE_URL -u TEST_DATABASE_URL $(PY) -m pytest $(PYTEST_ARGS)
	@if [ -n "$${TEST_DATABASE_URL}$${DATABASE_URL}" ]; then \
	  echo "--- again on $${TEST_DATABASE_URL:-$$DATABASE_URL}"; \
	  TEST_DATABASE_URL="$${TEST_DATABASE_URL:-$$DATABASE_URL}" $(PY) -m pytest $(PYTEST_ARGS); \
	fi

bench: $(VENV)/.installed-test
	$(PY) -m bench

screenshots: $(VENV)/.installed-test chromium node-deps
	$(PY) -m pytest tests/test_screenshots.py -q -p no:cacheprovider --screenshots

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=True $(PY) manage.py makemigrations --check --dry-run
	DEBUG=True $(PY) manage.py check
	$(VENV)/bin/mypy connections tickets

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) var/*.sqlite3* var/staticfiles tests/node/node_modules
