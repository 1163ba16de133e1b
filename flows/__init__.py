"""Plumber's orchestration: the Prefect flow and the `plumber` CLI. Composition, no step logic."""
