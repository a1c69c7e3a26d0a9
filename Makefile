# payhook — `make run` starts the service on an embedded default; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test install migrate check-python port-free bench lint clean FORCE

PORT ?= 8000

# The port is checked first (one line if taken, before any install), and again just before start.
# Every process honcho starts writes its metrics under one directory, which devrun.py empties first:
# /metrics sums web and worker processes (docs/metrics.md).
METRICS_DIR ?= $(CURDIR)/var/prometheus

run: check-python port-free install .env migrate
	@PROMETHEUS_MULTIPROC_DIR="$(METRICS_DIR)" $(BIN)/python config/devrun.py $(PORT)
	@PROMETHEUS_MULTIPROC_DIR="$(METRICS_DIR)" PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start --port $(PORT) --procfile Procfile

# $(error) makes the refusal one line, without make's own "Error 1" line after it.
port-free: check-python
	$(eval PORT_TAKEN := $(shell $(PYTHON) config/devrun.py --check $(PORT) 2>&1))
	$(if $(PORT_TAKEN),$(error $(PORT_TAKEN)))

# Needs no server: the run starts private PostgreSQL and Redis (and installs Chromium, PostgreSQL or
# Redis with apt-get when missing and root), see docs/testing.md. Extra pytest options: make test PYTEST_ARGS="-x".
test: install
	$(BIN)/pytest $(PYTEST_ARGS)

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "payhook needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) -V 2>/dev/null || echo "missing or not runnable"). Run: make PYTHON=/path/to/python3.11"; exit 1; }

install: check-python $(INSTALLED)

$(INSTALLED): pyproject.toml
	@echo "installing payhook and its pinned dependencies into $(VENV) (once; again when pyproject.toml changes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# -qq: errors only; pip's warnings about this machine's own configuration are not payhook's news.
	@$(BIN)/python -m pip install -qq --upgrade pip
	@$(BIN)/python -m pip install -qq -e '.[test]' 2>&1 | grep -v -e BuildBackendWarning -e '^ *!!' -e '^ *\*\*\*' -e 'be careful with folders' -e 'name as your package' -e 'WheelFile' -e '^ *$$' || true
	@$(BIN)/python -c 'import django, celery, rest_framework, pytest' || { echo "payhook: the install into $(VENV) failed (see above)"; exit 1; }
	@touch $@

# Development keys, generated per checkout and never committed (.gitignore); keys a newer payhook
# needs are appended to an existing .env, never replacing one in use.
.env: FORCE
	@$(BIN)/python -m config.devenv $@

FORCE:

migrate: install .env
	@$(BIN)/python manage.py migrate --no-input -v 0 && echo "database migrated"

bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/replay.py

clean:
	rm -rf $(VENV) var/*.sqlite3 var/broker var/celerybeat-schedule* var/mail var/static var/prometheus
