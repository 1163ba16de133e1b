"""The record of the latest flow run, and whether it still runs.

One checkout keeps it in var/last_run.json. On a stack (a lock server in PLUMBER_LOCKS_URL,
as the run lock across machines has) it is kept in the lock server's database instead
(tasks/core/shared_state.py): the next run may start on another machine, from a fresh
clone, and must still see a run that never ended.

A run killed with SIGKILL writes no end: its record still says RUNNING. Whether it is gone:
- in var/last_run.json, its process (pid and start time) no longer exists;
- in a stack's record, its pid says nothing on another machine; a run marks that it holds
  the run lock across machines (`holds_lock`), and unmarks it before letting go, so a
  record that says it holds a lock nobody else holds is a run that died holding it.
"""

from __future__ import annotations

import os
from typing import Any

from tasks.core.io import read_json, write_json
from tasks.core.paths import Paths
from tasks.core.processes import alive

LAST_RUN = "last_run.json"
SHARED_NAME = "last_run"  # its name in a stack's shared state
RUN_LOCK = "run"  # the shared lock a flow run holds (tasks/core/locks.py: var/run.lock)
RUNNING, CRASHED = "RUNNING", "CRASHED"


def shared_url() -> str | None:
    """The lock server that keeps the record on a stack; None for the embedded default."""
    from tasks.core.shared_locks import LOCKS_ENV

    return os.environ.get(LOCKS_ENV) or None


def read(paths: Paths) -> dict[str, Any] | None:
    url = shared_url()
    if url:
        from tasks.core import shared_state

        return shared_state.read(url, SHARED_NAME)
    return read_json(paths.var / LAST_RUN, default=None)


def write(paths: Paths, record: dict[str, Any]) -> None:
    url = shared_url()
    if url:
        from tasks.core import shared_state

        shared_state.write(url, SHARED_NAME, record)
    else:
        write_json(paths.var / LAST_RUN, record)


def let_go(paths: Paths, run_id: str) -> None:
    """Run `run_id` no longer holds the run lock (said just before it lets go)."""
    url = shared_url()
    if url:
        from tasks.core import shared_state

        shared_state.update(url, SHARED_NAME, {"holds_lock": False}, if_id=run_id)


def current(paths: Paths) -> dict[str, Any] | None:
    """The record as it stands for `plumber status`."""
    record = read(paths)
    url = shared_url()
    if url and record and record.get("state") == RUNNING:
        from tasks.core.shared_locks import is_held

        return effective(record, shared_lock_held=is_held(url, RUN_LOCK))
    return effective(record)


def effective(
    record: dict[str, Any] | None, *, shared_lock_held: bool | None = None
) -> dict[str, Any] | None:
    """A last-run record as it stands: RUNNING whose run is gone reads as CRASHED.

    `shared_lock_held`: for a stack's record, whether anyone (but the caller) holds the
    run lock across machines now; None for a checkout's own record."""
    if not record or record.get("state") != RUNNING:
        return record
    if shared_lock_held is None:
        if alive(int(record.get("pid") or -1), record.get("pid_started")):
            return record
        reason = (
            f"its process (pid {record.get('pid')}) ended without recording an outcome "
            "(killed, or the machine stopped)"
        )
    else:
        if shared_lock_held or not record.get("holds_lock"):
            return record
        reason = (
            f"it held the run lock across machines (host {record.get('host', '?')}, pid "
            f"{record.get('pid')}) and lost it without recording an outcome (killed, or "
            "its machine stopped)"
        )
    return {**record, "state": CRASHED, "reason": reason}
