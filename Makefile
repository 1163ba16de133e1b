# Two commands do all the set-up on a fresh clone: `make run` and `make test`.
# Both create .venv and install requirements.lock into it; the install runs again
# only when requirements.lock or pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast test-drills check bench ui server serve clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/plumber demo init
	$(BIN)/plumber run
	$(BIN)/plumber push
	$(BIN)/plumber status

# The default suite (about 10 minutes here); the fault drills and the load test (about 6
# more) run in CI after it (.ci/run) and with `make test-drills`.
test: $(STAMP)
	$(BIN)/pytest -m "not drill"

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow and not drill"

test-drills: $(STAMP)
	$(BIN)/pytest -m drill

# Lint, format, types, and the layer rule: the steps (tasks/) never import the
# orchestration (flows/) or Prefect, so `dvc repro` runs them without either.
check: $(STAMP)
	@if grep -rnE '^\s*(from|import) (flows|prefect)\b' tasks; then \
		echo "layer rule broken: tasks/ imports flows/ or Prefect (lines above)"; exit 1; fi
	$(BIN)/ruff check tasks flows tests bench
	$(BIN)/ruff format --check tasks flows tests bench
	$(BIN)/mypy tasks flows

bench: $(STAMP)
	$(BIN)/python bench/collect.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/pipeline.py

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/var/mlflow/mlflow.db --host 127.0.0.1 --port 5000

# The local Prefect server with its UI (http://127.0.0.1:4200, or another free port:
# `plumber server status`), its database under var/prefect-server; runs use it when
# PREFECT_API_URL is unset. It stays until `plumber server stop`.
server: $(STAMP)
	$(BIN)/plumber server start

serve: $(STAMP)
	$(BIN)/plumber serve

clean:
	-$(BIN)/plumber server stop
	rm -rf var/ data/ reports/ models/
