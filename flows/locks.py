"""Who holds the repository: one `plumber run` at a time, never beside a `dvc repro`.

`plumber run` takes var/run.lock for the whole flow, and before each stage waits for DVC's
own repository lock (.dvc/tmp/lock, which `dvc repro` and every other DVC command take).
Both waits end at `flow.lock_timeout_seconds`; then `Busy` names the holder (exit 75),
never DVC's raw "Unable to acquire lock".
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.cli_support import Busy
from tasks.io import write_json
from tasks.paths import Paths


@contextmanager
def run_lock(paths: Paths, timeout: float) -> Iterator[None]:
    """Hold var/run.lock; the holder's pid and start time go beside it for the message.

    Reentrant within a process: `plumber run` takes it before starting Prefect (a busy
    repository fails fast), and the flow takes it again, as a scheduled run must."""
    from filelock import FileLock, Timeout

    paths.var.mkdir(parents=True, exist_ok=True)
    lock_file, holder_file = paths.var / "run.lock", paths.var / "run.holder.json"
    lock = FileLock(str(lock_file), is_singleton=True)
    if lock.is_locked:  # held by this process already
        with lock:
            yield
        return
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        holder = _read(holder_file)
        raise Busy(
            f"another plumber run (pid {holder.get('pid', '?')}, since "
            f"{holder.get('started', '?')}) holds {lock_file}; waited {timeout:g} s "
            "(flow.lock_timeout_seconds)"
        ) from None
    try:
        write_json(holder_file, {"pid": os.getpid(), "started": _now(), "argv": sys.argv})
        yield
    finally:
        holder_file.unlink(missing_ok=True)
        lock.release()


def wait_for_dvc(root: Path, timeout: float) -> None:
    """Return once DVC's repository lock is free (taking and dropping it), or raise Busy."""
    import zc.lockfile

    lock_file = root / ".dvc" / "tmp" / "lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            zc.lockfile.LockFile(str(lock_file)).close()
            return
        except zc.lockfile.LockError:
            if time.monotonic() >= deadline:
                pid = lock_file.read_text().strip() if lock_file.exists() else "?"
                raise Busy(
                    f"a DVC command (pid {pid or '?'}: `dvc repro` or another) holds "
                    f"{lock_file}; waited {timeout:g} s (flow.lock_timeout_seconds)"
                ) from None
            time.sleep(0.5)


def _read(path: Path) -> dict:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
