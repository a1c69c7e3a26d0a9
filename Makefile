# payhook — `make run` starts the service on an embedded default; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test install migrate check-python bench lint clean

run: install .env migrate
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start --port 8000 --procfile Procfile

# Needs no server: the run starts private PostgreSQL and Redis (and installs Chromium, PostgreSQL or
# Redis with apt-get when missing and root), see docs/testing.md. Extra pytest options: make test PYTEST_ARGS="-x".
test: install
	$(BIN)/pytest $(PYTEST_ARGS)

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "payhook needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) -V 2>/dev/null || echo "missing or not runnable"). Run: make PYTHON=/path/to/python3.11"; exit 1; }

install: check-python $(INSTALLED)

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# Development keys, generated once per checkout; never committed (.gitignore).
.env:
	$(BIN)/python -m config.devenv > $@
	@echo "wrote $@ with generated development keys"

migrate: install .env
	$(BIN)/python manage.py migrate --no-input

bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/replay.py

clean:
	rm -rf $(VENV) var/*.sqlite3 var/broker var/celerybeat-schedule*
