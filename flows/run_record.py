"""The latest flow run, kept for `plumber status`: var/last_run.json.

Written when a flow run starts (state RUNNING, with its process id) and by the flow's own
hooks when it ends (completed, failed, crashed, cancelled), so a run started by `plumber
run`, a schedule or the Prefect UI is recorded alike. A SIGKILL runs no hook: the record
then still says RUNNING while its process is gone, which `effective()` reads as CRASHED,
and the next flow run writes down (also in Prefect, where the run would otherwise stay
Running for ever). `effective()` is in tasks/ops/status.py, which reads the record.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tasks.core import clock
from tasks.core.io import read_json, write_json
from tasks.core.journal import process_started
from tasks.core.paths import Paths
from tasks.ops.status import CRASHED, LAST_RUN, RUNNING, effective

log = logging.getLogger(__name__)


def read(paths: Paths) -> dict[str, Any] | None:
    return read_json(paths.var / LAST_RUN, default=None)


def record_start(paths: Paths, flow_run: Any) -> dict[str, Any] | None:
    """Record this run as RUNNING; first write down a previous run that never ended.
    Returns that previous run's record (now CRASHED), or None."""
    stale = effective(read(paths))
    crashed = stale if stale and stale.get("state") == CRASHED and "finished" not in stale else None
    if crashed:
        crashed = {**crashed, "finished": clock.stamp(), "found_by": str(flow_run.id)}
        _crash_in_prefect(crashed["id"], crashed["reason"])
    pid = os.getpid()
    write_json(
        paths.var / LAST_RUN,
        {
            "id": str(flow_run.id),
            "name": flow_run.name,
            "state": RUNNING,
            "pid": pid,
            "pid_started": process_started(pid),
            "started": clock.stamp(),
            "previous": crashed,
        },
    )
    return crashed


def _crash_in_prefect(flow_run_id: str, reason: str) -> None:
    """Set the dead run's Prefect state to Crashed (it would stay Running for ever)."""
    try:
        from uuid import UUID

        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is not None and not run.state.is_final():
                client.set_flow_run_state(UUID(flow_run_id), Crashed(message=reason), force=True)
    except Exception as exc:  # another server, or a deleted run: the local record says it
        log.warning("could not mark flow run %s as crashed in Prefect (%s)", flow_run_id,
                    type(exc).__name__)  # fmt: skip


def record_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect hook for completion, failure, crash and cancellation."""
    decision = retrained = None
    if state.is_completed():
        result = state.result(raise_on_failure=False)
        if isinstance(result, dict):
            decision = (result.get("release") or {}).get("decision")
            retrained = (result.get("retrain") or {}).get("retrain")
    record_end(
        Paths.at(flow_run.parameters.get("root", ".")), str(flow_run.id), flow_run.name,
        state.type.value, state.message, decision, retrained,
    )  # fmt: skip


def record_end(
    paths: Paths,
    run_id: str,
    name: str,
    state: str,
    message: str | None,
    decision: str | None = None,
    retrained: bool | None = None,
) -> None:
    """The run's end: its state (COMPLETED, FAILED, CRASHED, CANCELLED) and outcome."""
    before = read(paths) or {}
    write_json(
        paths.var / LAST_RUN,
        {
            "id": run_id,
            "name": name,
            "state": state,
            "message": message,
            "started": before.get("started") if before.get("id") == run_id else None,
            "finished": clock.stamp(),
            "decision": decision,  # None: the release did not run
            "retrain": retrained,  # False: the retrain policy found no retrain needed
            "previous": before.get("previous"),
        },
    )
