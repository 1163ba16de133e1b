"""One run and one release at a time across machines: PostgreSQL advisory locks.

With a stack (PLUMBER_LOCKS_URL, from the profile), the run and release locks are also
taken in PostgreSQL, on a connection held for as long as the work: a second machine waits,
then fails with Busy naming the holder (exit 75), as a second process does on one machine
with the file locks (tasks/core/locks.py), which stay. PostgreSQL releases the lock when
the holder's connection ends: its process exiting or killed (SIGKILL included) closes it at
once; a machine that vanishes is noticed by TCP keepalives within about a minute.

The holder names itself in the connection's application_name (what, host, pid), so the
waiter reads who holds the lock from pg_stat_activity, with no table of our own to clean.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tasks.core.errors import Busy, StepError
from tasks.core.secrets import mask_urls

log = logging.getLogger(__name__)

LOCKS_ENV = "PLUMBER_LOCKS_URL"
NAMESPACE = 0x706C6D62  # 'plmb': the first key of every Plumber advisory lock
POLL_SECONDS = 0.5
WATCH_SECONDS = 5.0  # how often a held lock's connection is asked whether it stands
_held: dict[str, tuple[Any, int]] = {}  # name -> (connection, depth): reentrant per process


def key(name: str) -> int:
    """The lock's second key: a stable signed 32-bit number for `name`."""
    value = zlib.crc32(name.encode())
    return value - 2**32 if value >= 2**31 else value


def connect(url: str, what: str) -> Any:
    import psycopg

    label = f"plumber: {what} @{socket.gethostname()} pid {os.getpid()}"
    try:
        return psycopg.connect(
            url, autocommit=True, connect_timeout=10, application_name=label[:63],
            keepalives=1, keepalives_idle=20, keepalives_interval=5, keepalives_count=6,
        )  # fmt: skip
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StepError(
            f"the lock server {mask_urls(url)} ({LOCKS_ENV}) cannot be reached: {first}"
        ) from None


def holder(conn: Any, name: str) -> str:
    """Who holds `name`, in words, read from PostgreSQL's own lock table."""
    row = _holder_row(conn, name)
    if row is None:
        return "another process (it has just let go)"
    app, addr, since = row
    where = f" from {addr}" if addr else ""
    return f"{app or 'a client'}{where} (since {since:%Y-%m-%dT%H:%M:%S%z})"


def _holder_row(conn: Any, name: str) -> Any:
    return conn.execute(
        "SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 2 "
        # Advisory locks are per database: another stack's, on the same server, is not ours.
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (NAMESPACE, key(name) & 0xFFFFFFFF),
    ).fetchone()


def is_held(url: str, name: str) -> bool:
    """Whether some process holds the lock `name` now (read, never taken)."""
    conn = connect(url, f"asking who holds {name}")
    try:
        return _holder_row(conn, name) is not None
    finally:
        conn.close()


@contextmanager
def advisory(
    url: str,
    name: str,
    *,
    timeout: float,
    what: str,
    setting: str,
    say: Callable[[str], None],
) -> Iterator[None]:
    """Hold the advisory lock `name` in the database at `url` for the block, waiting up to
    `timeout` seconds (`setting` names where that comes from), else Busy naming the holder.
    Reentrant within a process."""
    if name in _held:
        conn, depth = _held[name]
        _held[name] = (conn, depth + 1)
        try:
            yield
        finally:
            _held[name] = (conn, depth)
        return
    conn = connect(url, what)
    try:
        wait_for(conn, name, timeout, setting, say)
        _held[name] = (conn, 1)
        watch = LockWatch(conn, name, mask_urls(url))
        try:
            yield
        finally:
            watch.stop()
            del _held[name]
            if not watch.lost:
                _unlock(conn, name)
    finally:
        conn.close()


def _unlock(conn: Any, name: str) -> None:
    import psycopg

    try:
        conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", (NAMESPACE, key(name)))
    except psycopg.Error:  # the connection went since the watch last asked: so did the lock
        log.warning("the lock server connection was gone when the %s lock was let go; "
                    "PostgreSQL had let it go with the connection", name)  # fmt: skip


class LockWatch:
    """While a lock is held, ask its connection every WATCH_SECONDS whether it still
    stands. PostgreSQL lets the lock go with the connection (a restart, a network cut, a
    terminated backend), and another machine may then take it: the holder must not go on
    with work that is exclusive no longer. So on a lost connection it says so in one line
    (logged as an error) and stops its own process as SIGTERM does (Stopped: the steps'
    clean-up runs, the run is recorded as crashed, and the next run finishes what it left)."""

    def __init__(self, conn: Any, name: str, url: str) -> None:
        import threading

        self.conn, self.name, self.url = conn, name, url
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lock-watch-{name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _run(self) -> None:
        import signal

        while not self._done.wait(WATCH_SECONDS):
            try:
                self.conn.execute("SELECT 1").fetchone()
            except Exception as exc:
                if self._done.is_set():
                    return
                self.lost = True
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log.error("the connection to the lock server %s (%s) was lost (%s): the %s "
                          "lock is no longer held, so this process stops its work now",
                          self.url, LOCKS_ENV, first, self.name)  # fmt: skip
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=WATCH_SECONDS + 30)


def wait_for(
    conn: Any, name: str, timeout: float, setting: str, say: Callable[[str], None]
) -> None:
    def take() -> bool:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (NAMESPACE, key(name))
        )
        return bool(row.fetchone()[0])

    if take():
        return
    say(f"waiting for {holder(conn, name)} to release the {name} lock (shared, in "
        f"PostgreSQL); up to {timeout:g} s ({setting})")  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        if take():
            return
    raise Busy(
        f"{holder(conn, name)} holds the {name} lock (shared, in PostgreSQL: "
        f"{LOCKS_ENV}); waited {timeout:g} s ({setting})"
    )
