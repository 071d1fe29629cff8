# dicomflow — every set-up step a newcomer needs, on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export DICOMFLOW_HOME ?= $(CURDIR)/var

.PHONY: install run test test-postgres sysdeps bench bench-catalog clean bytecode js

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) bytecode

# Compiled modules for src/ (only changed files are recompiled). Python reads them even where
# PYTHONDONTWRITEBYTECODE=1 keeps it from writing them: ~40 ms less start-up for every command.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src >/dev/null

# System tools the tests drive as real peers: DCMTK (storescu/storescp), dicom3tools (dciodvfy),
# Debian's Chromium (browser tests), Orthanc (benchmark peer). Installed with apt-get when missing and we are root.
sysdeps:
	@missing=""; \
	command -v storescu >/dev/null || missing="$$missing dcmtk"; \
	command -v dciodvfy >/dev/null || missing="$$missing dicom3tools"; \
	test -x /usr/sbin/Orthanc || missing="$$missing orthanc"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (tests that need them are skipped)"; fi; \
	fi

run: install
	$(BIN)/dicomflow migrate
	$(BIN)/dicomflow ensure-admin
	$(BIN)/dicomflow serve

test: install sysdeps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite with the catalog on PostgreSQL (pytest-django creates and drops test_<name>) and
# Redis as the Celery broker (each session uses a queue of its own, so runs may share one database).
PG_URL ?= postgres://postgres@127.0.0.1:5432/dicomflow
REDIS_URL ?= redis://127.0.0.1:6379/15
test-postgres: install sysdeps
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) $(BIN)/python -m pytest $(PYTEST_ARGS)

# A million-instance catalog on PostgreSQL (created and dropped on the server of PG_URL), p50/p95 of
# the API and the pages; BENCH_ARGS e.g. --instances 100000 for a smaller one.
bench-catalog: install
	PG_URL=$(PG_URL) $(BIN)/python benchmarks/catalog_bench.py $(BENCH_ARGS)

bench: install sysdeps
	$(BIN)/python benchmarks/import_bench.py

clean:
	rm -rf $(VENV) var

# The browser's DICOM header parser (dicom-parser from npm, bundled by esbuild) into
# src/dicomflow/web/static/web/vendor/; the built file is committed, so `make run` needs no Node.
js:
	cd jsbuild && npm ci && npm run build
