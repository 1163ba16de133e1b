"""Retries, one way: tenacity's `Retrying`, which every retry of ours uses (an HTTP source,
`dvc push`, the tracking server's health, the local Prefect server's API), and what those
share."""

from __future__ import annotations

from typing import Any


def last_result(state: Any) -> Any:
    """tenacity's `retry_error_callback` that returns what the last try returned once the
    tries ran out (tenacity would raise RetryError), for the caller to word."""
    return state.outcome.result()
