# Two commands do all the set-up on a fresh clone: `make run` and `make test`.
# Both create .venv and install requirements.lock into it; the install runs again
# only when requirements.lock or pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast check bench ui clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/plumber demo init
	$(BIN)/plumber run
	$(BIN)/dvc push
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

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/var/mlflow/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf var/ data/ reports/ models/
