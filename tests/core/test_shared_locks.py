"""The run and release locks across machines: PostgreSQL advisory locks held by real
processes, a second holder refused with exit 75 naming the first, and released on SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tasks.core.errors import Busy
from tasks.core.locks import one_at_a_time
from tasks.core.shared_locks import LOCKS_ENV, advisory, is_held

pytestmark = pytest.mark.postgres

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tasks.core.locks import one_at_a_time
    folder, ready = Path(sys.argv[1]), Path(sys.argv[2])
    with one_at_a_time(folder / "run.lock", timeout=5, what="a plumber run",
                       setting="flow.lock_timeout_seconds"):
        ready.touch()
        time.sleep(600)
    """
)


def start_holder(folder: Path, url: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Another machine holding the run lock: its own var/ folder, the same lock server."""
    folder.mkdir(parents=True)
    ready = folder / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(ready)],
        env={**os.environ, LOCKS_ENV: url},
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, "the holder exited before taking the lock"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.1)
    return proc, ready


def test_a_second_machine_is_refused_naming_the_holder_then_gets_it_after_a_kill(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, _ = start_holder(tmp_path / "machine-a", pg_url)
    monkeypatch.setenv(LOCKS_ENV, pg_url)
    here = tmp_path / "machine-b"  # a different folder: the file lock alone would pass
    said: list[str] = []
    try:
        with pytest.raises(Busy) as caught:  # noqa: SIM117
            with one_at_a_time(here / "run.lock", timeout=1, what="a plumber run",
                               setting="flow.lock_timeout_seconds", say=said.append):  # fmt: skip
                pytest.fail("took a lock another machine holds")
        message = str(caught.value)
        assert f"pid {proc.pid}" in message and "plumber: a plumber run" in message
        assert "the run lock (shared, in PostgreSQL" in message
        assert "waited 1 s (flow.lock_timeout_seconds)" in message
        assert caught.value.exit_code == 75
        assert said and said[0].startswith("waiting for plumber: a plumber run")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The kernel closed the killed holder's connection: PostgreSQL let the lock go.
    with one_at_a_time(here / "run.lock", timeout=30, what="a plumber run",
                       setting="flow.lock_timeout_seconds"):  # fmt: skip
        pass


def test_a_lock_of_the_same_name_in_another_database_is_another_stack_s(
    pg_url: str, pg_database: str
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    with advisory(pg_database, name, timeout=1, what="the other stack", setting="s", say=print):
        assert is_held(pg_database, name)
        assert not is_held(pg_url, name)
        _other_process_takes(pg_url, name)
    assert not is_held(pg_database, name)


def test_the_lock_is_reentrant_and_names_are_separate(pg_url: str) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    with advisory(pg_url, name, timeout=1, what="outer", setting="s", say=print):
        with (
            advisory(pg_url, name, timeout=1, what="inner", setting="s", say=print),
            advisory(pg_url, name + "-other", timeout=1, what="x", setting="s", say=print),
        ):
            pass
        # still held by this process after the inner block: another connection is refused
        with pytest.raises(Busy):
            _other_process_takes(pg_url, name)
    _other_process_takes(pg_url, name)  # released at the end of the outer block


def _other_process_takes(url: str, name: str) -> None:
    code = (
        "import sys; from tasks.core.shared_locks import advisory\n"
        f"with advisory({url!r}, {name!r}, timeout=0.5, what='probe', setting='s', "
        "say=lambda line: None): pass"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise Busy(done.stderr.strip().splitlines()[-1])


def test_an_unreachable_lock_server_is_one_clear_error(tmp_path: Path) -> None:
    from tasks.core.errors import StepError

    url = "postgresql://plumber:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StepError) as caught:  # noqa: SIM117
        with advisory(url, "run", timeout=1, what="w", setting="s", say=print):
            pass
    message = str(caught.value)
    assert "cannot be reached" in message and LOCKS_ENV in message
    assert "s3cret" not in message


STEP_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tasks.core.entry import run_step
    from tasks.core.locks import one_at_a_time
    folder, ready = Path(sys.argv[1]), Path(sys.argv[2])

    def work():
        with one_at_a_time(folder / "run.lock", timeout=5, what="a plumber run",
                           setting="flow.lock_timeout_seconds"):
            ready.touch()
            time.sleep(600)  # exclusive work

    sys.exit(run_step(work))
    """
)


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_a_lost_lock_connection_stops_the_exclusive_work_in_one_line(
    pg_url: str, tmp_path: Path
) -> None:
    """The lock server ends the holder's connection (as a restart or a network cut would):
    PostgreSQL let the lock go, so the holder stops its work within seconds, saying why in
    one line, and exits as a stopped step does; another machine then takes the lock."""
    import psycopg

    folder = tmp_path / "machine-a"
    folder.mkdir()
    ready = folder / "ready"
    proc = subprocess.Popen([sys.executable, "-c", STEP_HOLDER, str(folder), str(ready)],
                            env={**os.environ, LOCKS_ENV: pg_url}, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        cut = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE %s", (f"plumber: a plumber run @% pid {proc.pid}",),
        ).fetchall()  # fmt: skip
    assert cut == [(True,)]
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    said = [line for line in proc.stderr.read().splitlines() if line.strip()]
    proc.stderr.close()
    assert (
        " ERROR tasks.core.shared_locks: the connection to the lock server postgresql://" in said[0]
    )
    assert "the run lock is no longer held, so this process stops its work now" in said[0]
    assert said[1:] == ["stopped: SIGTERM received before the step finished"], said
    assert "Traceback" not in "\n".join(said)
    with advisory(pg_url, "run", timeout=5, what="machine b", setting="s", say=print):
        pass  # free for another machine at once
