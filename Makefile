# greenloop: `make run` and `make test` each install what they need first.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell md5sum pyproject.toml | cut -c1-8)
CONFIG ?= configs/elec2.yaml
# pip on these machines prints a warning per package for absent local mirrors: hide those.
QUIET := 2>&1 | grep -v "is ignored: it is neither" || true
# One variable per `export` line: make reads `export A=x B=y` as A="x B=y".
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export CODECARBON_LOG_LEVEL := error
export DVC_NO_ANALYTICS := 1

.PHONY: install run test test-slow lint clean-state

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(QUIET)
	# The local CPU wheel first: nothing may pull a CUDA build of torch.
	$(PY) -m pip install -q torch==2.13.0 $(QUIET)
	$(PY) -m pip install -q -e ".[dev]" $(QUIET)
	$(PY) -c "import torch, prefect, mlflow, evidently, codecarbon, dvc; assert torch.__version__.startswith('2.13.0')"
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/greenloop run --config $(CONFIG)

test: install
	$(VENV)/bin/ruff check greenloop greenloop_cli tasks flows tests benchmarks
	$(VENV)/bin/pytest -q

test-slow: install
	$(VENV)/bin/pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check greenloop greenloop_cli tasks flows tests benchmarks

clean-state:
	rm -rf state mlflow.db mlartifacts reports/* data/stream data/accepted data/quarantine

# --- Run it as a service (issue 4): Prefect server + deployments, MLflow UI, fleet -------
.PHONY: serve wake ui fleet install-scale browser-deps postgres-deps test-browser test-postgres test-scale
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SCALE_STAMP := $(VENV)/.scale-$(shell md5sum pyproject.toml | cut -c1-8)

serve: install   ## Prefect server on 127.0.0.1:4200, deployments, watcher, MLflow UI on :5000
	$(VENV)/bin/greenloop serve --config $(CONFIG) --ui

wake: install  ## serve only while there is work: started per arrival, stops when idle
	$(VENV)/bin/greenloop wake --config $(CONFIG)

ui: install
	$(VENV)/bin/greenloop ui --config $(CONFIG)

fleet: install
	$(VENV)/bin/greenloop fleet --configs configs/*.yaml --replay-batches 6

$(SCALE_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,scale]" $(QUIET)
	$(PY) -c "import prefect_dask, psycopg2, playwright, torch; assert torch.__version__.startswith('2.13.0')"
	rm -f $(VENV)/.scale-*; touch $(SCALE_STAMP)

install-scale: $(SCALE_STAMP)

# Debian's chromium, driven by the playwright Python package (never `playwright install`).
browser-deps:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

postgres-deps:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql; }

test-browser: install-scale browser-deps
	GREENLOOP_REQUIRE_BROWSER=1 $(VENV)/bin/pytest -q -m browser -p no:cacheprovider

test-postgres: install-scale postgres-deps
	GREENLOOP_REQUIRE_POSTGRES=1 $(VENV)/bin/pytest -q -m postgres -p no:cacheprovider

test-scale: install-scale
	$(VENV)/bin/pytest -q -m scale -p no:cacheprovider
