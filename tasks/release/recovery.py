"""Repair what killed operations left in MLflow: runs still RUNNING, versions still pending.

Called by every flow run (its first task), by training and by every release. It asks
MLflow only when there is something to repair: an intent record of a killed operation
(tasks/core/journal.py), or a tracking server, which other machines write to as well.

- an MLflow run whose process is gone is ended KILLED, tagged `plumber.end_reason`;
- the registry is reconciled (tasks/release/registry.py): pending versions abandoned, an
  unrecorded champion move recorded.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.core import journal, runs, tracking
from tasks.core.paths import Paths

log = logging.getLogger(__name__)


def needed(paths: Paths) -> bool:
    return bool(journal.unfinished(paths)) or tracking.uses_server(paths)


def recover(paths: Paths, model_name: str, client: Any = None) -> list[str]:
    """Repair and return what was repaired, one line each ([] when nothing was)."""
    killed = journal.unfinished(paths)
    if not killed and not tracking.uses_server(paths) and client is None:
        return []
    from tasks.release import registry

    client = client or registry.connect(paths)
    done = []
    for _, record in killed:
        run_id = record.get("mlflow_run_id")
        if run_id and runs.end_if_running(client, run_id, runs.killed_reason(record)):
            done.append(f"MLflow run {run_id} ({record['operation']}) marked KILLED")
    done += runs.end_orphaned_runs(client, paths)
    registry.ensure_model(client, model_name)
    done += registry.reconcile(client, model_name)
    for path, _ in killed:
        path.unlink(missing_ok=True)
    for line in done:
        log.warning("repaired: %s", line)
    return done
