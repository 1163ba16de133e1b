"""MLflow runs tied to the process that runs them, so a run whose process died can be told
from one still going: process tags on every training run, KILLED (with the reason) when
the process is asked to stop, and RUNNING runs of dead processes ended by whoever looks
next (tasks/release/recovery.py, and training itself).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks.core import clock, processes, tracking
from tasks.core.paths import Paths

# Tags every training run carries, so a later run can tell whether its process still lives.
PID_TAG, PID_STARTED_TAG, HOST_TAG = "plumber.pid", "plumber.pid_started", "plumber.host"
END_REASON_TAG = "plumber.end_reason"


def process_tags() -> dict[str, str]:
    import os

    pid = os.getpid()
    return {
        PID_TAG: str(pid),
        PID_STARTED_TAG: str(processes.started(pid)),
        HOST_TAG: socket.gethostname(),
    }


@contextmanager
def ended_if_stopped(client: Any, run_id: str) -> Iterator[None]:
    """A run whose process is asked to stop (SIGTERM: a time limit, a cancelled or killed
    flow) ends KILLED with the reason, not FAILED like a crash."""
    from tasks.core.errors import Stopped

    try:
        yield
    except Stopped as exc:
        import mlflow

        client.set_tag(run_id, END_REASON_TAG, f"stopped: {exc}")
        mlflow.end_run("KILLED")  # the active run: MLflow would otherwise end it FAILED
        raise


def killed_reason(record: dict[str, Any]) -> str:
    return (
        f"killed: its process (pid {record.get('pid')}, {record.get('operation')} started "
        f"{record.get('started')}) ended without finishing; marked by the next run at "
        f"{clock.stamp()}"
    )


def end_if_running(client: Any, run_id: str, reason: str) -> bool:
    run = tracking.find(f"MLflow run {run_id}", lambda: client.get_run(run_id))
    if run is None or run.info.status != "RUNNING":  # never created, or already ended
        return False
    client.set_tag(run_id, END_REASON_TAG, reason)
    client.set_terminated(run_id, status="KILLED")
    return True


def end_orphaned_runs(client: Any, paths: Paths) -> list[str]:
    """RUNNING runs of this host's processes that are gone (whatever wrote no record)."""
    experiment = client.get_experiment_by_name(tracking.experiment_name(paths))
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
        alive = processes.alive(
            int(tags[PID_TAG]), float(started) if started not in (None, "None") else None
        )
        record = {"pid": tags[PID_TAG], "operation": "training", "started": "earlier"}
        if not alive and end_if_running(client, run.info.run_id, killed_reason(record)):
            done.append(f"MLflow run {run.info.run_id} (training) marked KILLED")
    return done


def end_runs_of_flow_run(client: Any, paths: Paths, flow_run_id: str, reason: str) -> list[str]:
    """RUNNING runs of a flow run found dead, on whichever machine it ran: their pids say
    nothing here, but a dead flow run's trainings are dead too."""
    experiment = client.get_experiment_by_name(tracking.experiment_name(paths))
    if experiment is None:
        return []
    running = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and "
        f"tags.\"{tracking.FLOW_RUN_TAG}\" = '{flow_run_id}'",
    )
    done = []
    for run in running:
        if end_if_running(client, run.info.run_id, f"killed: {reason}"):
            done.append(f"MLflow run {run.info.run_id} (training) marked KILLED")
    return done
