"""The data steps' work on Dask: the same bytes in one process, on a local cluster and on a
scheduler with two worker processes started here on loopback; a worker killed mid-step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.core.config import ComputeParams
from tasks.core.errors import StepError
from tests.factories import MiniProject, wait_until
from tests.test_incremental import FIRST, data_steps, outputs, rebuilt_cold, small_windows

DASK = Path(sys.executable).parent / "dask"


class Cluster:
    """A Dask scheduler and two single-threaded worker processes on 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / "scheduler.json"
        self.logs = folder
        self.scheduler = self._start("scheduler", "scheduler", "--host", "127.0.0.1",
                                     "--port", "0", "--no-dashboard",
                                     "--scheduler-file", str(self.file))  # fmt: skip
        if not wait_until(self.file.exists, timeout=120):
            raise AssertionError(f"no scheduler: {self._log('scheduler')}")
        self.address = json.loads(self.file.read_text())["address"]
        worker = ["worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-nanny",
                  "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0"]  # fmt: skip
        self.workers = [self._start(f"worker-{i}", *worker) for i in range(2)]
        if not wait_until(lambda: len(self.info()["workers"]) == 2, timeout=120):
            raise AssertionError(f"workers never joined: {self._log('worker-0')}")

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("wb") as log:
            return subprocess.Popen([str(DASK), *args], stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

    def _log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-2000:]

    def info(self) -> dict:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            return client.scheduler_info(n_workers=-1)

    def worker_pids(self) -> set[int]:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            return set(client.run(os.getpid).values())

    def tasks_run(self) -> dict[str, int]:
        """Per kind of task (check_batch, build_days): how many finished on the cluster."""
        from distributed import Client

        def counts(dask_scheduler) -> dict[str, int]:  # type: ignore[no-untyped-def]
            return {name: sum(n for state, n in prefix.state_counts.items()
                              if state in ("memory", "released", "forgotten"))
                    for name, prefix in dask_scheduler.task_prefixes.items()}  # fmt: skip

        with Client(self.address, timeout=30) as client:
            return client.run_on_scheduler(counts)

    def close(self) -> None:
        # The workers first: a worker whose scheduler went first waits to reconnect.
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        yield running
    finally:
        running.close()
    assert all(p.poll() is not None for p in [*running.workers, running.scheduler])


def a_month(project: MiniProject) -> dict[str, bytes]:
    """Thirty days collected and built in this process, one batch of 200 rows at a time."""
    small_windows(project)
    project.write_params(featurize={"test_days": 2, "valid_days": 2, "min_category_count": 1,
                                    "batch_rows": 200},
                         validate={"max_reject_rate": 0.5, "extra_airport_codes": [],
                                   "batch_rows": 200})  # fmt: skip
    project.add_days(FIRST, 30, per_day=12)
    data_steps(project)
    return outputs(project)


def test_a_scheduler_with_two_workers_gives_the_bytes_of_one_process(
    project: MiniProject, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_process = a_month(project)
    before = cluster.tasks_run()
    monkeypatch.setenv("PLUMBER_DASK_ADDRESS", cluster.address)
    assert rebuilt_cold(project) == in_process
    ran = cluster.tasks_run()
    # Both steps' batches ran there, on worker processes of their own.
    assert ran.get("check_batch", 0) - before.get("check_batch", 0) >= 4
    assert ran.get("build_days", 0) - before.get("build_days", 0) >= 4
    pids = cluster.worker_pids()
    assert len(pids) == 2 and os.getpid() not in pids


def test_a_local_cluster_gives_the_bytes_of_one_process(project: MiniProject) -> None:
    in_process = a_month(project)
    text = (project.root / "params.yaml").read_text()
    (project.root / "params.yaml").write_text(text + "compute:\n  workers: 2\n")
    assert rebuilt_cold(project) == in_process


def test_a_worker_killed_mid_step_is_replaced_and_the_result_unchanged(
    project: MiniProject, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of one worker while validate's batches run on it: the scheduler sends its
    batches to the other worker (allowed-failures), and the bytes are the same."""
    import threading

    in_process = a_month(project)
    monkeypatch.setenv("PLUMBER_DASK_ADDRESS", cluster.address)
    victim = cluster.workers[0]
    done_before = cluster.tasks_run().get("check_batch", 0)

    at_kill: dict[str, int] = {}

    def kill_once_batches_finish() -> bool:
        ran = cluster.tasks_run()
        if ran.get("check_batch", 0) <= done_before:
            return False
        os.killpg(victim.pid, signal.SIGKILL)  # mid-step: the first batches are done
        at_kill.update(ran)
        return True

    killer = threading.Thread(target=wait_until, args=(kill_once_batches_finish, 120))
    killer.start()
    try:
        assert rebuilt_cold(project) == in_process
    finally:
        killer.join()
    assert victim.wait(timeout=30) == -signal.SIGKILL  # killed, and the steps still finished
    after = cluster.tasks_run()  # work went on after the kill, on the other worker
    assert after["build_days"] > at_kill.get("build_days", 0)
    assert len(cluster.info()["workers"]) == 1


def test_an_unreachable_scheduler_is_one_line_naming_it(
    project: MiniProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.core import compute

    monkeypatch.setenv("PLUMBER_DASK_ADDRESS", "tcp://127.0.0.1:9")
    cfg = ComputeParams(connect_timeout_seconds=2)
    expected = (r"compute: no Dask scheduler answers at tcp://127.0.0.1:9 "
                r"\(from PLUMBER_DASK_ADDRESS\) within 2 s")  # fmt: skip
    with pytest.raises(StepError, match=expected), compute.mapper(cfg):
        pass


def test_a_stage_killed_leaves_no_worker_of_its_cluster_behind(project: MiniProject) -> None:
    """`python -m tasks.validate` on a local cluster of 2, SIGKILLed (the stage alone, as an
    OOM kill would): its workers notice their scheduler is gone and exit."""
    from tests.factories import kill, leftovers

    a_month(project)
    text = (project.root / "params.yaml").read_text()
    (project.root / "params.yaml").write_text(text + "compute:\n  workers: 2\n")
    for folder in ("data/validated", "data/quarantine"):
        (project.root / folder).rename(project.root / f"{folder}.old")  # all to check again
    stage = subprocess.Popen([sys.executable, "-m", "tasks.validate"], cwd=project.root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert wait_until(lambda: len(leftovers(project.root)) >= 3, timeout=120), "no workers"
    kill(stage)
    assert wait_until(lambda: not leftovers(project.root), timeout=120), leftovers(project.root)
