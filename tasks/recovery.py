"""Repair what killed operations left in MLflow: runs still RUNNING, versions still pending.

Called by every flow run (its first task), by training and by every release. It asks
MLflow only when there is something to repair: an intent record of a killed operation
(tasks/journal.py), or a tracking server, which other machines write to as well.

- an MLflow run whose process is gone is ended KILLED, tagged `plumber.end_reason`;
- the registry is reconciled (tasks/registry.py): pending versions abandoned, an
  unrecorded champion move recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks import journal, tracking
from tasks.paths import Paths

log = logging.getLogger(__name__)

# Tags every training run carries, so a later run can tell whether its process still lives.
PID_TAG, PID_STARTED_TAG, HOST_TAG = "plumber.pid", "plumber.pid_started", "plumber.host"
END_REASON_TAG = "plumber.end_reason"


def process_tags() -> dict[str, str]:
    import os

    pid = os.getpid()
    return {
        PID_TAG: str(pid),
        PID_STARTED_TAG: str(journal.process_started(pid)),
        HOST_TAG: socket.gethostname(),
    }


@contextmanager
def ended_if_stopped(client: Any, run_id: str) -> Iterator[None]:
    """A run whose process is asked to stop (SIGTERM: a time limit, a cancelled or killed
    flow) ends KILLED with the reason, not FAILED like a crash."""
    from tasks.cli_support import Stopped

    try:
        yield
    except Stopped as exc:
        import mlflow

        client.set_tag(run_id, END_REASON_TAG, f"stopped: {exc}")
        mlflow.end_run("KILLED")  # the active run: MLflow would otherwise end it FAILED
        raise


def needed(paths: Paths) -> bool:
    return bool(journal.unfinished(paths)) or tracking.uses_server(paths)


def recover(paths: Paths, model_name: str, client: Any = None) -> list[str]:
    """Repair and return what was repaired, one line each ([] when nothing was)."""
    killed = journal.unfinished(paths)
    if not killed and not tracking.uses_server(paths) and client is None:
        return []
    from tasks import registry

    client = client or registry.connect(paths)
    done = []
    for _, record in killed:
        run_id = record.get("mlflow_run_id")
        if run_id and end_if_running(client, run_id, _reason(record)):
            done.append(f"MLflow run {run_id} ({record['operation']}) marked KILLED")
    done += end_orphaned_runs(client, paths)
    registry.ensure_model(client, model_name)
    done += registry.reconcile(client, model_name)
    for path, _ in killed:
        path.unlink(missing_ok=True)
    for line in done:
        log.warning("repaired: %s", line)
    return done


def _reason(record: dict[str, Any]) -> str:
    return (
        f"killed: its process (pid {record.get('pid')}, {record.get('operation')} started "
        f"{record.get('started')}) ended without finishing; marked by the next run at "
        f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}"
    )


def end_if_running(client: Any, run_id: str, reason: str) -> bool:
    try:
        run = client.get_run(run_id)
    except Exception:  # deleted, or never created: nothing to end
        return False
    if run.info.status != "RUNNING":
        return False
    client.set_tag(run_id, END_REASON_TAG, reason)
    client.set_terminated(run_id, status="KILLED")
    return True


def end_orphaned_runs(client: Any, paths: Paths) -> list[str]:
    """RUNNING runs of this host's processes that are gone (whatever wrote no record)."""
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    if experiment is None:
        return []
    host, done = socket.gethostname(), []
    running = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    for run in running:
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or PID_TAG not in tags:
            continue  # another machine's run, or one that predates these tags
        started = tags.get(PID_STARTED_TAG)
        alive = journal.process_alive(
            int(tags[PID_TAG]), float(started) if started not in (None, "None") else None
        )
        record = {"pid": tags[PID_TAG], "operation": "training", "started": "earlier"}
        if not alive and end_if_running(client, run.info.run_id, _reason(record)):
            done.append(f"MLflow run {run.info.run_id} (training) marked KILLED")
    return done
