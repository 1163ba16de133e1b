"""A guarded command never outlives the process that started it: real processes, real
SIGKILL, checked in /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.core import guard, processes
from tests.factories import ROOT, kill, wait_until

# A command that starts a grandchild and waits: what `dvc repro` running a stage looks like.
TREE = ["sh", "-c", "sleep 300 & sleep 300; echo done"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_command_and_its_children_die_with_the_parent_even_on_sigkill() -> None:
    # A parent that starts a guarded tree, prints the guard's pid, then sleeps: we kill -9 it.
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time; from tasks.core import guard\n"
         f"p = subprocess.Popen(guard.command({TREE!r}), start_new_session=True)\n"
         "print(p.pid, flush=True); time.sleep(300)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parent.stdout is not None
    group = int(parent.stdout.readline())
    assert wait_until(lambda: len(processes.group_members(group)) >= 3)  # guard, sh, two sleeps
    tree = processes.group_members(group)
    kill(parent)  # SIGKILL: no clean-up code of the parent runs
    assert wait_until(lambda: not any(alive(pid) for pid in tree)), [
        pid for pid in tree if alive(pid)
    ]


def test_a_stopped_guard_stops_its_group_and_reports_the_signal() -> None:
    proc = subprocess.Popen(guard.command(TREE), cwd=ROOT, start_new_session=True)
    assert wait_until(lambda: len(processes.group_members(proc.pid)) >= 3)
    tree = processes.group_members(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert wait_until(lambda: not any(alive(pid) for pid in tree))


@pytest.mark.parametrize(("command", "code"), [(["true"], 0), (["sh", "-c", "exit 3"], 3),
                                               (["sh", "-c", "kill -9 $$"], 128 + 9)])  # fmt: skip
def test_the_guard_passes_the_exit_status_on(command: list[str], code: int) -> None:
    assert subprocess.run(guard.command(command), cwd=ROOT, timeout=60).returncode == code


def test_run_guarded_stops_the_whole_group_at_its_time_limit() -> None:
    marker = f"{os.getpid() % 1000 + 9000}"  # a sleep of this many seconds is ours alone
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        guard.run_guarded(["sh", "-c", f"sleep {marker} & sleep {marker}"], timeout=1, cwd=ROOT)
    assert time.monotonic() - started < 15

    def ours() -> list[str]:
        found = subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True, text=True)
        return found.stdout.split()

    assert wait_until(lambda: not ours()), ours()
