# Two commands do all the set-up on a fresh clone: `make run` and `make test`.
# Both create .venv and install requirements.lock into it; the install runs again
# only when requirements.lock or pyproject.toml changed.

SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lock run test test-fast test-drills check docs docs-build bench ui plots plots-template server serve stack-up stack-status stack-down clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Compile requirements.lock from pyproject.toml: versions already in the lock stay, so
# only what pyproject.toml changed moves (add --upgrade-package NAME to move one). torch
# is written without its local '+cpu' tag, so the same line takes the CPU wheel on these
# machines and the regular wheel elsewhere.
LOCK_FLAGS := --quiet --extra dev --extra stack --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host
lock: $(STAMP)
	$(BIN)/pip-compile $(LOCK_FLAGS) -o requirements.lock pyproject.toml
	sed -i 's/^torch==\(.*\)+cpu$$/torch==\1/' requirements.lock

run: $(STAMP)
	$(BIN)/plumber demo init
	$(BIN)/plumber run
	$(BIN)/plumber push
	$(BIN)/plumber status

# The default suite; the fault drills, the schedule drills and the load test run in CI after
# it (.ci/run) and with `make test-drills`, one at a time. This suite and the inner loop run
# a test file per core (pytest-xdist: the tests of one file share their fixtures, so a file
# stays on one worker).
# Timings: docs/benchmarks.md.
XDIST := -n 2 --dist loadfile
test: $(STAMP)
	$(BIN)/pytest $(XDIST) -m "not drill" --durations=20

# The inner loop: a test that starts processes for seconds is marked slow.
test-fast: $(STAMP)
	$(BIN)/pytest $(XDIST) -m "not slow and not drill" --durations=10

test-drills: $(STAMP)
	$(BIN)/pytest -m drill

# The documentation site (docs/, mkdocs.yml): built, then served on http://127.0.0.1:8000.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

# Built with --strict (a broken link or anchor fails), as .ci/run does.
docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Lint, format, types, and the layer rules (import-linter contracts in pyproject.toml:
# tasks/ never imports flows/ or Prefect, so `dvc repro` runs the steps without either;
# tasks/ core < data < ml < release < ops, each importing only those below it).
check: $(STAMP)
	$(BIN)/ruff check tasks flows devstack tests bench plots docs/hooks plumber_entry.py
	$(BIN)/ruff format --check tasks flows devstack tests bench plots docs/hooks plumber_entry.py
	$(BIN)/mypy tasks flows devstack bench plumber_entry.py
	$(BIN)/lint-imports

# Each benchmark's output goes to var/bench/<name>.txt; docs/benchmarks.md is written from
# them (bench/page.py), the one page of measured figures. train, serve and reproduce measure
# the demo's model: a checkout that has not run yet runs first.
BENCHMARKS := collect train serve pipeline reproduce scale
bench: $(STAMP)
	test -d data/features || $(MAKE) run
	mkdir -p var/bench
	set -o pipefail; for b in $(BENCHMARKS); do $(BIN)/python bench/$$b.py | tee var/bench/$$b.txt || exit 1; done
	$(BIN)/python bench/page.py

ui: $(STAMP)
	$(BIN)/mlflow ui --app-name plumber --host 127.0.0.1 --port 5000 --backend-store-uri "$$($(BIN)/python -c \
		'from tasks.core.paths import Paths; from tasks.core.tracking import tracking_uri; print(tracking_uri(Paths.at()))')"

# `dvc plots show` draws offline: .dvc/config names plots/offline.html, a page with the
# vega scripts inline. `make plots` writes dvc_plots/index.html from the last evaluate.
plots: $(STAMP)
	$(BIN)/dvc plots show

# Remake plots/offline.html from npm (only to move to other vega versions; needs npm).
VEGA_PACKAGES := vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
plots-template: $(STAMP)
	rm -rf var/vega && mkdir -p var/vega
	cd var/vega && npm pack --silent $(VEGA_PACKAGES) && for f in *.tgz; do \
		mkdir "$${f%.tgz}" && tar xzf "$$f" -C "$${f%.tgz}" --strip-components=1; done
	$(BIN)/python plots/build_template.py $(patsubst %,var/vega/%,$(subst @,-,$(VEGA_PACKAGES)))

# The local Prefect server with its UI (http://127.0.0.1:4200, or another free port:
# `plumber server status`), its database under var/prefect-server; runs use it when
# PREFECT_API_URL is unset. It stays until `plumber server stop`.
server: $(STAMP)
	$(BIN)/plumber server start

serve: $(STAMP)
	$(BIN)/plumber serve

# The development stack on loopback (devstack/: MLflow and Prefect servers on the machine's
# PostgreSQL, an S3-compatible object store in memory, a work pool, run by supervisord),
# state under var/stack; point commands at it with PLUMBER_STACK=var/stack/stack.env.
# `python -m devstack down --purge` also drops its databases.
stack-up: $(STAMP)
	$(BIN)/python -m devstack up

stack-status: $(STAMP)
	$(BIN)/python -m devstack status

stack-down: $(STAMP)
	$(BIN)/python -m devstack down

clean:
	-$(BIN)/plumber server stop
	rm -rf var/ data/ reports/ models/
