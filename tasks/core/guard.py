"""A command that never outlives the process that started it.

    python -m tasks.core.guard -- COMMAND [ARG ...]

The guard starts COMMAND in its own process group (the guard leads it) and watches its
own parent. When the parent is gone, however it ended (SIGKILL included, when no cleanup
code of its runs), the guard stops the whole group: SIGTERM, then SIGKILL after a grace
period. A stage's `dvc repro` and everything it started go with it, so no stage keeps
running, holding DVC's locks and writing outputs, after the flow that ran it died.

Why a process and not a thread or PR_SET_PDEATHSIG: a SIGKILL of the flow ends all of its
threads, and PDEATHSIG fires when the *thread* that forked exits, which in Prefect's
worker threads happens long before the flow ends. The guard imports the standard library
and psutil only (tasks/core/processes.py): it costs about 40 ms to start.

Exit status: COMMAND's, or 128 + N when COMMAND was ended by signal N.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from tasks.core.processes import stop_group

POLL_SECONDS = 0.2


def command(argv: list[str]) -> list[str]:
    """`argv` wrapped in a guard run by this interpreter."""
    return [sys.executable, "-m", "tasks.core.guard", "--", *argv]


def run_guarded(
    argv: list[str], *, timeout: float, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """subprocess.run for a guarded command: past `timeout` (or interrupted) its whole
    process group is stopped, then TimeoutExpired (or the interruption) is raised."""
    with subprocess.Popen(  # the with closes its pipes, however it ends
        command(argv), start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, **popen,
    ) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            stop_group(proc.pid)
            proc.wait()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m tasks.core.guard -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    if os.getpgrp() != os.getpid():
        os.setpgrp()  # lead a group of our own, so stopping it stops everything below
    parent = os.getppid()
    pgid = os.getpgrp()

    def on_term(signum: int, frame: object) -> None:
        # Asked to stop (a time limit, Ctrl-C, a cancelled run): stop the whole group,
        # ourselves last (SIGTERM to the group reaches this handler again: ignore it).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_group(pgid)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    child = subprocess.Popen(argv)
    while True:
        try:
            code = child.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:  # re-parented: whoever started us is gone
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                stop_group(pgid)
                return 128 + signal.SIGKILL
            continue
        return 128 - code if code < 0 else code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
