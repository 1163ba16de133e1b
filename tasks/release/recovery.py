"""Repair what killed operations left in MLflow: runs still RUNNING, versions still pending.

Called by every flow run (its first task), by training and by every release. It asks
MLflow only when there is something to repair: an intent record of a killed operation
(tasks/core/journal.py), or a tracking server, which other machines write to as well.

- an MLflow run whose process is gone is ended KILLED, tagged `plumber.end_reason`, and so
  is one of a flow run found dead (on another machine, where its pid says nothing);
- the registry is reconciled (tasks/release/registry.py): pending versions abandoned, an
  unrecorded champion move recorded.
"""

from __future__ import annotations

import logging
from typing import Any

from tasks.core import clock, journal, mlflow_runs, tracking
from tasks.core.paths import Paths

log = logging.getLogger(__name__)


def needed(paths: Paths) -> bool:
    return bool(journal.unfinished(paths)) or tracking.uses_server(paths)


def recover(
    paths: Paths, model_name: str, client: Any = None, *, crashed_flow_run: str | None = None
) -> list[str]:
    """Repair and return what was repaired, one line each ([] when nothing was).
    `crashed_flow_run`: a flow run found dead (its record, tasks/ops/last_run.py), whose
    MLflow runs end KILLED on whichever machine it ran."""
    killed = journal.unfinished(paths)
    if not (killed or tracking.uses_server(paths) or client or crashed_flow_run):
        return []
    from tasks.release import registry

    client = client or registry.connect(paths)
    done = []
    for _, record in killed:
        run_id = record.get("mlflow_run_id")
        if run_id and mlflow_runs.end_if_running(client, run_id, mlflow_runs.killed_reason(record)):
            done.append(f"MLflow run {run_id} ({record['operation']}) marked KILLED")
    done += mlflow_runs.end_orphaned_runs(client, paths)
    if crashed_flow_run:
        reason = f"its flow run {crashed_flow_run} died; marked by the next run at {clock.stamp()}"
        done += mlflow_runs.end_runs_of_flow_run(client, paths, crashed_flow_run, reason)
    registry.ensure_model(client, model_name, paths)
    done += registry.reconcile(client, model_name)
    for path, _ in killed:
        path.unlink(missing_ok=True)
    for line in done:
        log.warning("repaired: %s", line)
    return done
