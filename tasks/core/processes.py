"""Processes, one way everywhere (psutil): whether a recorded process is still the one that
was recorded, the members of a process group, and stopping a group.

A record names a process by its pid and its start time: a pid reused later by another
process has another start time, so a record never takes a stranger for its writer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil

GRACE_SECONDS = 10.0
# Two readings of one process's start time differ by less than this (clock ticks).
SAME_START = 0.05


def started(pid: int) -> float | None:
    """When the process began (seconds since the epoch), or None if it is gone or exited
    (a zombie not yet reaped counts as gone)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.Error, ValueError):
        return None


def alive(pid: object, start: float | None = None) -> bool:
    """Whether `pid` is a live process, and, given the start time recorded with it, the
    same process that was recorded."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    now = started(pid)
    return now is not None and (start is None or abs(now - start) < SAME_START)


def group_members(pgid: int) -> list[int]:
    """Live processes of the group other than this one (zombies do not count)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) == pgid:
                found.append(proc.pid)
    return found


def stop_group(pgid: int, grace: float = GRACE_SECONDS) -> bool:
    """SIGTERM the process group, then SIGKILL whatever is still in it after `grace`
    seconds. The calling process may be in the group (a guard is): it is not waited for.
    False when there was no such group."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return True
