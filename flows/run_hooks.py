"""The latest flow run, kept for `plumber status` and for the next run (tasks/ops/last_run.py:
var/last_run.json, or on a stack the lock server's shared state).

Written when a flow run starts (state RUNNING, with its process id and host) and by the
flow's own hooks when it ends (completed, failed, crashed, cancelled), so a run started by
`plumber run`, a schedule, the Prefect UI or a worker on any machine is recorded alike. A
SIGKILL runs no hook: the record then still says RUNNING while its run is gone, which
`last_run.effective()` reads as CRASHED, and the next flow run, on whichever machine,
writes down (also in Prefect, where the run would otherwise stay Running for ever).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks.core import clock
from tasks.core.paths import Paths
from tasks.core.processes import started
from tasks.ops import last_run
from tasks.ops.last_run import CRASHED, RUNNING

log = logging.getLogger(__name__)


@contextmanager
def holding_run(paths: Paths, flow_run: Any) -> Iterator[dict[str, Any] | None]:
    """Record this run as RUNNING for as long as it holds the run lock (the caller holds
    it); first write down a previous run that never ended. Yields that run's record (now
    CRASHED), or None."""
    shared = last_run.shared_url() is not None
    before = last_run.read(paths)
    if before and before.get("finished") and before.get("state") in ENDED:
        _settle_in_prefect(before)  # its end never reached the server (it was down)
    # Holding the run lock, no other run holds it: a record that says it does is dead.
    stale = last_run.effective(before, shared_lock_held=False if shared else None)
    crashed = stale if stale and stale.get("state") == CRASHED and "finished" not in stale else None
    if crashed:
        crashed = {**crashed, "finished": clock.stamp(), "found_by": str(flow_run.id)}
        _crash_in_prefect(crashed["id"], crashed["reason"])
    pid = os.getpid()
    last_run.write(
        paths,
        {
            "id": str(flow_run.id),
            "name": flow_run.name,
            "state": RUNNING,
            "pid": pid,
            "pid_started": started(pid),
            "host": socket.gethostname(),
            "holds_lock": shared,
            "started": clock.stamp(),
            "previous": crashed,
        },
    )
    try:
        yield crashed
    finally:
        last_run.let_go(paths, str(flow_run.id))


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")


def _settle_in_prefect(record: dict[str, Any]) -> None:
    """A run that ended, by its own record, but whose end never reached Prefect (the
    server was down when it finished): its Prefect state set to the recorded end, so it
    does not stay Running for ever."""
    try:
        from uuid import UUID

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import StateType
        from prefect.states import State

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(record["id"]))
            if run.state is None or run.state.is_final():
                return
            ended = State(type=StateType(record["state"]), name=record.get("shown_as"),
                          message=record.get("message"))  # fmt: skip
            client.set_flow_run_state(UUID(record["id"]), ended, force=True)
        log.warning("flow run %s ended %s while the Prefect server was away: recorded now",
                    record.get("name"), record.get("shown_as") or record["state"])  # fmt: skip
    except Exception as exc:  # another server, or a deleted run: the local record says it
        log.warning("could not record the end of flow run %s in Prefect (%s)",
                    record.get("name"), type(exc).__name__)  # fmt: skip


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
        state.type.value, state.message, decision, retrained, shown_as=state.name,
    )  # fmt: skip


def record_end(
    paths: Paths,
    run_id: str,
    name: str,
    state: str,
    message: str | None,
    decision: str | None = None,
    retrained: bool | None = None,
    shown_as: str | None = None,
) -> None:
    """The run's end: its state (COMPLETED, FAILED, CRASHED, CANCELLED) and outcome;
    `shown_as`: the state's name as Prefect shows it (the decision: Released, No retrain)."""
    before = last_run.read(paths) or {}
    if before.get("id") not in (None, run_id) and before.get("state") == RUNNING:
        # A hook runs after the run lock is let go: a newer run may hold it and be recorded.
        log.info("flow run %s ended %s; the record is a newer run's now", name, state)
        return
    last_run.write(
        paths,
        {
            "id": run_id,
            "name": name,
            "state": state,
            "shown_as": shown_as or state,
            "message": message,
            "started": before.get("started") if before.get("id") == run_id else None,
            "finished": clock.stamp(),
            "decision": decision,  # None: the release did not run
            "retrain": retrained,  # False: the retrain policy found no retrain needed
            "previous": before.get("previous"),
        },
    )
