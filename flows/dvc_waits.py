"""Who holds the repository: one flow run at a time, and no two stages at once.

- A flow run holds var/run.lock from start to end (tasks/core/locks.py: `run_lock`),
  however it started.
- Every stage's command holds var/stage.lock while it runs (tasks/core/entry.py), whether
  the flow or a `dvc repro` typed by hand started it: stages never overlap.
- Before each stage the flow waits for DVC: its repository lock (.dvc/tmp/lock, held by
  any DVC command) and its per-output locks (.dvc/tmp/rwlock, held by a stage DVC runs).

So a `dvc repro` started by hand during a flow run runs its stages between the flow's
stages, never beside one. The flow reads dvc.lock (the stages' order and state, the retrain
policy) only while holding DVC's repository lock, as DVC's own commands do: another DVC
command never writes it meanwhile, so it is never read half-written. Every wait says at
once what it waits for and for how long (`flow.lock_timeout_seconds`); past that, `Busy`
names the holder (exit 75), never DVC's raw "Unable to acquire lock" or "is busy".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.core import dvc_internals
from tasks.core.errors import Busy

log = logging.getLogger(__name__)


def wait_for_dvc(root: Path, timeout: float) -> None:
    """Return once no other process holds DVC's repository lock or its output locks, or
    raise Busy naming the holder."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        holder = dvc_holder(root)
        if holder is None:
            return
        if time.monotonic() >= deadline:
            raise Busy(f"{holder} holds the repository; waited {timeout:g} s "
                       "(flow.lock_timeout_seconds)")  # fmt: skip
        if not said:
            log.warning("waiting for %s; up to %g s (flow.lock_timeout_seconds)", holder, timeout)
            said = True
        time.sleep(0.5)


@contextmanager
def holding_dvc(root: Path, timeout: float) -> Iterator[None]:
    """Hold DVC's repository lock for a short read of dvc.lock, once its holders are gone
    (waited for, naming them, up to `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        wait_for_dvc(root, max(0.0, deadline - time.monotonic()))
        with dvc_internals.holding_repo_lock(root) as held:
            if held:
                yield
                return
        time.sleep(0.1)  # taken between the check and now: wait again


def dvc_holder(root: Path) -> str | None:
    """Who holds DVC's locks now, in words; None when nobody does."""
    pid = dvc_internals.repo_lock_holder(root)
    if pid is not None:
        lock = dvc_internals.repo_lock(root)
        return f"a DVC command (pid {pid}: `dvc repro` or another; {lock})"
    holders = dvc_internals.rwlock_holders(root)
    if holders:
        stage_pid, cmd = holders[0]
        return f"a DVC stage (pid {stage_pid}: `{cmd}`; .dvc/tmp/rwlock)"
    return None
