# Two commands do all the set-up on a fresh clone: `make run` and `make test`.
# Both create .venv and install requirements.lock into it; the install runs again
# only when requirements.lock or pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast check bench ui server serve clean

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

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

check: $(STAMP)
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

# A local Prefect server with its UI on http://127.0.0.1:4200, its database under var/.
# Point runs at it with PREFECT_API_URL=http://127.0.0.1:4200/api (`make serve` does).
server: $(STAMP)
	PREFECT_HOME=$(CURDIR)/var/prefect-server PREFECT_SERVER_ANALYTICS_ENABLED=false \
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

serve: $(STAMP)
	PREFECT_API_URL=http://127.0.0.1:4200/api $(BIN)/plumber serve

clean:
	rm -rf var/ data/ reports/ models/
