"""Operating-system file locks with a record of who holds them, for one-at-a-time work.

    var/run.lock      a flow run (plumber run, a schedule, the UI), for the whole run
    var/stage.lock    a stage's command (python -m tasks.<step>), whoever started it
    var/release.lock  a release or rollback

With a stack (tasks/core/profile.py), the run and release locks also hold across machines
(`one_at_a_time`: a PostgreSQL advisory lock beside the file lock).

The kernel releases a lock when its holder dies, SIGKILL included, so a crashed holder
never wedges the next one. Beside each lock a small JSON file names the holder (pid, what,
since when): a process that has to wait says at once whom it waits for and for how long,
and one that waited too long fails with `Busy` naming them (exit 75).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.core import clock
from tasks.core.errors import Busy
from tasks.core.io import write_json
from tasks.core.paths import Paths

log = logging.getLogger(__name__)


@contextmanager
def exclusive(
    lock_file: Path,
    *,
    timeout: float,
    what: str,
    setting: str,
    say: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold `lock_file` for the block; `what` describes the holder to whoever waits.

    Waits up to `timeout` seconds (the params key `setting` names where it comes from).
    Reentrant within a process: an inner `exclusive` on a lock the process holds passes.
    """
    from filelock import FileLock, Timeout

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    holder_file = lock_file.with_suffix(".holder.json")
    lock = FileLock(str(lock_file), is_singleton=True)
    if lock.is_locked:  # held by this process already
        with lock:
            yield
        return
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = read_holder(holder_file)
        (say or log.warning)(
            f"waiting for {describe(holder)} to release {lock_file.name}; up to {timeout:g} s "
            f"({setting})"
        )
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise Busy(
                f"{describe(read_holder(holder_file))} holds {lock_file}; waited {timeout:g} s "
                f"({setting})"
            ) from None
    try:
        write_json(holder_file, {"pid": os.getpid(), "what": what, "since": clock.stamp(),
                                 "argv": sys.argv})  # fmt: skip
        yield
    finally:
        holder_file.unlink(missing_ok=True)
        lock.release()


@contextmanager
def one_at_a_time(
    lock_file: Path,
    *,
    timeout: float,
    what: str,
    setting: str,
    say: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """`exclusive` on this machine; with a stack's lock server (PLUMBER_LOCKS_URL, from the
    profile) also the lock of the same name across machines (tasks/core/shared_locks.py)."""
    from tasks.core.shared_locks import LOCKS_ENV, advisory

    with exclusive(lock_file, timeout=timeout, what=what, setting=setting, say=say):
        url = os.environ.get(LOCKS_ENV)
        if not url:
            yield
            return
        with advisory(url, lock_file.stem, timeout=timeout, what=what, setting=setting,
                      say=say or log.warning):  # fmt: skip
            yield


@contextmanager
def run_lock(
    paths: Paths, timeout: float, say: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold var/run.lock (and with a stack, the run lock across machines). Reentrant within
    a process: `plumber run` takes it before starting Prefect (a busy repository fails
    fast), and the flow takes it again, as a scheduled run must."""
    with one_at_a_time(
        paths.lock("run"), timeout=timeout, what="a plumber run",
        setting="flow.lock_timeout_seconds", say=say,
    ):  # fmt: skip
        yield


def is_free(lock_file: Path) -> bool:
    """Whether nobody holds the lock now (taking and dropping it)."""
    from filelock import FileLock, Timeout

    if not lock_file.exists():
        return True
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    lock.release()
    return True


def read_holder(holder_file: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(holder_file.read_text()))
    except (OSError, ValueError):
        return {}


def describe(holder: dict[str, Any]) -> str:
    what = holder.get("what", "another process")
    return f"{what} (pid {holder.get('pid', '?')}, since {holder.get('since', '?')})"
