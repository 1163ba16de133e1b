"""The latest flow run's record: in var/ for one checkout, in the lock server's database on a
stack, where a run killed on one machine reads as crashed from another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tasks.core import shared_state
from tasks.core.paths import Paths
from tasks.core.shared_locks import LOCKS_ENV
from tasks.ops import last_run
from tasks.ops.last_run import CRASHED, RUNNING, effective


def running(**fields: object) -> dict[str, object]:
    return {"id": "r1", "name": "brave-otter", "state": RUNNING, **fields}


def test_a_checkout_s_record_is_crashed_when_its_process_is_gone() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert effective(running(pid=os.getpid()))["state"] == RUNNING  # type: ignore[index]
    crashed = effective(running(pid=dead.pid))
    assert crashed is not None and crashed["state"] == CRASHED
    assert f"pid {dead.pid}" in crashed["reason"]


@pytest.mark.parametrize(
    ("holds_lock", "lock_held", "state"),
    [
        (True, False, CRASHED),  # it said it held the lock, and nobody does: it died
        (True, True, RUNNING),  # it holds it now
        (False, False, RUNNING),  # it let go and is ending: its hook writes the end
    ],
)
def test_a_stack_s_record_is_judged_by_the_shared_run_lock(
    holds_lock: bool, lock_held: bool, state: str
) -> None:
    # Another machine's pid: never looked up here (it would name some process of ours).
    record = running(pid=1, host="machine-a", holds_lock=holds_lock)
    assert effective(record, shared_lock_held=lock_held)["state"] == state  # type: ignore[index]


@pytest.mark.postgres
def test_shared_state_is_written_whole_and_updated_only_for_its_run(pg_database: str) -> None:
    assert shared_state.read(pg_database, "last_run") is None
    shared_state.write(pg_database, "last_run", {"id": "a", "state": RUNNING, "holds_lock": True})
    assert not shared_state.update(pg_database, "last_run", {"holds_lock": False}, if_id="b")
    assert shared_state.update(pg_database, "last_run", {"holds_lock": False}, if_id="a")
    assert shared_state.read(pg_database, "last_run") == {
        "id": "a", "state": RUNNING, "holds_lock": False,
    }  # fmt: skip
    shared_state.write(pg_database, "last_run", {"id": "c"})
    assert shared_state.read(pg_database, "last_run") == {"id": "c"}


MACHINE_A = textwrap.dedent(
    """
    import os, socket, sys, time
    from pathlib import Path
    from tasks.core.locks import one_at_a_time
    from tasks.core.paths import Paths
    from tasks.ops import last_run
    paths, ready = Paths.at(Path(sys.argv[1])), Path(sys.argv[2])
    with one_at_a_time(paths.lock("run"), timeout=5, what="a plumber run",
                       setting="flow.lock_timeout_seconds"):
        last_run.write(paths, {"id": "run-a", "name": "on-a", "state": "RUNNING",
                               "pid": os.getpid(), "host": socket.gethostname(),
                               "holds_lock": True})
        ready.touch()
        time.sleep(600)
    """
)


@pytest.mark.postgres
def test_a_run_killed_on_one_machine_reads_as_crashed_on_another(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", MACHINE_A, str(tmp_path / "a"), str(ready)],
        env={**os.environ, LOCKS_ENV: pg_database},
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "machine A never started"
            time.sleep(0.1)
        monkeypatch.setenv(LOCKS_ENV, pg_database)
        other = Paths.at(tmp_path / "b")  # another checkout: nothing of A's on its disk
        assert last_run.current(other)["state"] == RUNNING  # type: ignore[index]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        seen = last_run.current(other)
        assert seen is not None and seen["state"] == CRASHED and seen["id"] == "run-a"
        assert f"pid {proc.pid}" in seen["reason"] and "held the run lock" in seen["reason"]
        assert not (other.var / last_run.LAST_RUN).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
