"""A Dask cluster of its own processes on loopback: one scheduler and N single-threaded
workers, each under a guard (tasks/core/guard.py), so none outlives the process that
started it, however that process ends (SIGKILL included).

The flow starts one for its run when `compute.workers` > 1 and no scheduler is named in
PLUMBER_DASK_ADDRESS: validate and featurize then send their batches to the same warm
workers, instead of each stage starting a cluster of its own and importing pandas into
it again. The benchmark and the tests start one the way a team's existing cluster runs:
started before, and reached by its address alone.

Workers run the code of the checkout that started them (PYTHONPATH), one thread each
(the work is pandas, which holds the GIL), with no nanny: nothing restarts a lost
worker, the scheduler sends its jobs to the others (tasks/core/compute.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.core import guard, processes
from tasks.core.config import ComputeParams
from tasks.core.errors import StepError

log = logging.getLogger(__name__)

SCHEDULER_FILE = "scheduler.json"


@contextmanager
def for_the_stages(cfg: ComputeParams, folder: Path, *, root: Path) -> Iterator[str | None]:
    """While it lasts, the stages this process starts find a cluster's address in
    `cfg.address_env`: the one already named there, or, when `cfg.workers` > 1, a
    cluster of that many workers started here (and stopped after). One worker: none."""
    if os.environ.get(cfg.address_env) or cfg.workers == 1:
        yield os.environ.get(cfg.address_env)
        return
    with running_cluster(cfg.workers, folder, root=root) as address:
        log.info("compute: a cluster of %d workers at %s for this run's stages", cfg.workers,
                 address)  # fmt: skip
        os.environ[cfg.address_env] = address
        try:
            yield address
        finally:
            os.environ.pop(cfg.address_env, None)


@contextmanager
def running_cluster(
    workers: int, folder: Path, *, root: Path, timeout: float = 300
) -> Iterator[str]:
    """A scheduler and `workers` workers, their logs, scratch space and scheduler file
    in `folder` (emptied first, removed after); yields the scheduler's address once every worker
    joined. A part that exits, or does not start within `timeout` seconds, is a StepError
    quoting the last line of each part's log."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        file = folder / SCHEDULER_FILE
        scheduler = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(file)]  # fmt: skip
        procs.append(_start(folder, "scheduler", scheduler, env))
        _wait(lambda: file.exists(), procs, folder, timeout, "the Dask scheduler did not start")
        address = json.loads(file.read_text())["address"]
        for i in range(workers):
            argv = ["worker", address, "--name", f"worker-{i}", "--nthreads", "1", "--no-nanny",
                    "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0",
                    "--local-directory", str(folder / f"worker-{i}")]  # fmt: skip
            procs.append(_start(folder, f"worker-{i}", argv, env))
        from distributed import Client

        with Client(address, timeout=timeout) as client:
            _wait(lambda: _joined(client, workers), procs, folder, timeout,
                  f"not all {workers} Dask workers joined")  # fmt: skip
        yield address
    finally:
        # The workers first: a worker whose scheduler went first waits to reconnect.
        for proc in reversed(procs):
            processes.stop_group(proc.pid)
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _start(
    folder: Path, name: str, args: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    dask = str(Path(sys.executable).parent / "dask")
    with (folder / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            guard.command([dask, *args]), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip


def _joined(client: Any, workers: int) -> bool:
    """Whether `workers` workers have joined the scheduler, as Dask itself tells
    (Client.wait_for_workers), asked a second at a time so that a part that exits
    meanwhile is seen at once."""
    try:
        client.wait_for_workers(workers, timeout=1)
    except TimeoutError:
        return False
    return True


def _wait(
    ready: Callable[[], bool], procs: list[subprocess.Popen[bytes]], folder: Path,
    timeout: float, what: str,
) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not ready():
        ended = [p for p in procs if p.poll() is not None]
        if ended or time.monotonic() > deadline:
            logs = sorted(folder.glob("*.log"))
            detail = "; ".join(f"{log.stem}: {_last_line(log)}" for log in logs)
            reason = "a part exited" if ended else f"within {timeout:g} s"
            raise StepError(f"compute: {what} ({reason}): {detail}")
        time.sleep(0.1)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(nothing logged)"
