"""Running a command in a guarded process group of its own: each output line handed on as
it comes, a time limit and a stop signal that stop the whole group, and how it ended, in
words ("its command was killed by SIGKILL", "exited 3 without an error line").
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tasks.core import processes

_GRACE_SECONDS = 10  # between asking a timed-out stage to stop and killing it
_WATCH_SECONDS = 2  # how often a running stage asks whether its flow run was cancelled


def run_captured(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    timeout: float | None,
    on_line: Callable[[str], None],
    stop_when: Callable[[], bool] | None = None,
) -> tuple[int, list[str], bool]:
    """Run a command under a guard (tasks/core/guard.py) in its own process group, handing
    each output line to `on_line`.

    Returns (exit code, the last 40 lines, whether it was stopped for the timeout). Past
    the timeout, or if this process is interrupted (SIGTERM, Ctrl-C, a cancelled run),
    the whole group is stopped: SIGTERM, then SIGKILL after a grace period; if this
    process is killed outright, the guard stops the group itself. `stop_when`, asked
    every few seconds, stops the group too when it answers True (a cancelled flow run).
    """
    from tasks.core import guard

    proc = subprocess.Popen(
        guard.command(argv), cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
        start_new_session=True,
    )  # fmt: skip
    finished, timed_out = threading.Event(), threading.Event()
    timer = _time_limit(proc, timeout, timed_out)
    watcher = _watch(proc, stop_when, finished)
    tail: deque[str] = deque(maxlen=40)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            on_line(line)
        code = proc.wait()
    finally:
        finished.set()
        if watcher is not None:
            watcher.join(timeout=30)
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:  # interrupted (SIGTERM, Ctrl-C): stop it, never wait for it
            _stop_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    return code, list(tail), timed_out.is_set()


def _time_limit(
    proc: subprocess.Popen[str], timeout: float | None, timed_out: threading.Event
) -> threading.Timer | None:
    """Past `timeout` seconds, stop the group and say so in `timed_out`."""
    if not timeout:
        return None

    def stop() -> None:
        timed_out.set()
        _stop_group(proc)

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    return timer


def _watch(
    proc: subprocess.Popen[str], stop_when: Callable[[], bool] | None, finished: threading.Event
) -> threading.Thread | None:
    """Ask `stop_when` every few seconds until `finished`; stop the group when it says so."""
    if stop_when is None:
        return None

    def watch() -> None:
        while not finished.wait(_WATCH_SECONDS):
            if stop_when():
                _stop_group(proc)
                return

    watcher = threading.Thread(target=watch, name="stage-watch", daemon=True)
    watcher.start()
    return watcher


def _stop_group(proc: subprocess.Popen[str]) -> None:
    processes.stop_group(proc.pid, _GRACE_SECONDS)
    proc.wait()


_EXITED_WITH = re.compile(r"exited with (-?\d+)")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)(: .*)?$")


def last_error(lines: list[str], code: int | None = None) -> str:
    """Why a stage failed: its own `error:` / `busy:` / `stopped:` line, else the
    exception a traceback ended with, else DVC's `ERROR:` line, else what ended it (a
    signal, or its exit code); never a mere log line."""
    for prefix in ("error: ", "busy: ", "stopped: "):
        for line in reversed(lines):
            if line.startswith(prefix):
                return line.removeprefix(prefix)
    for line in reversed(lines):
        if _EXCEPTION.match(line):
            return line
    for line in reversed(lines):
        if line.startswith("ERROR: "):
            found = _EXITED_WITH.search(line)
            signum = killed_by(int(found.group(1))) if found else None
            if signum:  # the stage's command was killed: say by what
                dvc_said = line.removeprefix("ERROR: ")
                return f"its command was killed by {signal_name(signum)} ({dvc_said})"
            return line.removeprefix("ERROR: ")
    return ended_by(code)


def ended_by(code: int | None) -> str:
    """A process's end in words, from its exit status (the guard's 128 + N included)."""
    if code is None:
        return "it ended without an error line"
    signum = killed_by(code)
    if signum:
        return f"it was killed by {signal_name(signum)} (exit {code}), without an error line"
    return f"it exited {code} without an error line"


def killed_by(code: int) -> int | None:
    """The signal an exit status says ended a process: -N from Python's subprocess, or
    128 + N from a shell (DVC runs a stage's command through one, and whether that shell
    execs the command or waits for it decides which of the two DVC reports)."""
    if code < 0:
        return -code
    if 128 < code < 128 + 65:
        return code - 128
    return None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
