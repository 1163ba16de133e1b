"""`plumber rollback`: `champion` moved back, under the release lock, with its reason in
the release history."""

from __future__ import annotations

import os
from typing import Any

from tasks.core import journal, tracking
from tasks.core.config import Params
from tasks.core.errors import NotFound, StepError
from tasks.core.paths import Paths
from tasks.release import registry
from tasks.release.run import locked


def rollback(params: Params, paths: Paths, reason: str, to: str | None = None) -> dict[str, Any]:
    """Move `champion` back: to `to`, or to the version it held before the current one."""
    if not reason.strip():
        raise StepError("a rollback needs --reason")
    name = params.release.model_name
    with locked(paths, params.release.lock_timeout_seconds), journal.intent(paths, "rollback"):
        client = registry.connect(paths)
        registry.ensure_model(client, name, paths)
        registry.reconcile(client, name)
        current = registry.champion(client, name)
        if current is None:
            raise StepError(f"{name} has no champion to roll back")
        target = to or _previous_champion(registry.history(client, name), str(current.version))
        if target is None:
            raise StepError(f"{name} has had no champion before version {current.version}; "
                            "name one with --to")  # fmt: skip
        chosen = registry.version(client, name, target)
        if chosen is None:
            raise NotFound(f"{name} has no version {target}: see `plumber releases`")
        if "smoke.latency_p99_ms" not in chosen.tags:
            raise StepError(f"version {target} never passed the smoke test; it cannot serve")
        if target == str(current.version):
            raise StepError(f"version {target} is already the champion")
        return registry.move_champion(
            client, name, target,
            {"action": "rollback", "forced": False, "reason": reason,
             "flow_run_id": os.environ.get(tracking.FLOW_RUN_ENV)},
        )  # fmt: skip


def _previous_champion(entries: list[dict[str, Any]], current: str) -> str | None:
    """The champion before the latest move to `current`."""
    for entry in reversed(entries):
        if entry.get("to") == current:
            return entry.get("from")
    return None
