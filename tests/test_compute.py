"""The data steps' work on Dask: the same bytes in one process, on a local cluster and on a
scheduler with two worker processes started here on loopback; a worker killed mid-step."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.core.cluster import running_cluster
from tasks.core.errors import StepError
from tests.factories import MiniProject, processes_matching, section, wait_until
from tests.test_incremental import (
    FIRST,
    OUTPUTS,
    data_steps,
    outputs,
    rebuilt_cold,
    small_windows,
)

ROOT = Path(__file__).resolve().parents[1]


class Cluster:
    """A running cluster (tasks/core/cluster.py: a scheduler and two single-threaded
    worker processes on 127.0.0.1), asked through its address alone."""

    def __init__(self, address: str) -> None:
        self.address = address

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


def cluster_processes(folder: Path) -> list[str]:
    """Live processes of the cluster whose files are in `folder` (each names it)."""
    return processes_matching(str(folder))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("dask") / "cluster"
    with running_cluster(2, folder, root=ROOT) as address:
        yield Cluster(address)
    assert not folder.exists() and not cluster_processes(folder)


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


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
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


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_a_local_cluster_gives_the_bytes_of_one_process(project: MiniProject) -> None:
    in_process = a_month(project)
    text = (project.root / "params.yaml").read_text()
    (project.root / "params.yaml").write_text(text.replace("\n  workers: 1\n", "\n  workers: 2\n"))
    assert rebuilt_cold(project) == in_process


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_a_worker_killed_mid_step_leaves_its_work_to_the_other_and_the_result_unchanged(
    project: MiniProject, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of one worker while validate's batches run on it: the scheduler sends its
    batches to the other worker (allowed-failures), and the bytes are the same."""
    import threading

    in_process = a_month(project)
    monkeypatch.setenv("PLUMBER_DASK_ADDRESS", cluster.address)
    victim = min(cluster.worker_pids())
    done_before = cluster.tasks_run().get("check_batch", 0)

    at_kill: dict[str, int] = {}

    def kill_once_batches_finish() -> bool:
        ran = cluster.tasks_run()
        if ran.get("check_batch", 0) <= done_before:
            return False
        os.kill(victim, signal.SIGKILL)  # mid-step: the first batches are done
        at_kill.update(ran)
        return True

    killer = threading.Thread(target=wait_until, args=(kill_once_batches_finish, 120))
    killer.start()
    try:
        assert rebuilt_cold(project) == in_process
    finally:
        killer.join()
    assert at_kill, "the worker was never killed"
    assert victim not in cluster.worker_pids()  # killed, and the steps still finished
    after = cluster.tasks_run()  # work went on after the kill, on the other worker
    assert after["build_days"] > at_kill.get("build_days", 0)
    assert len(cluster.info()["workers"]) == 1


def test_an_unreachable_scheduler_is_one_line_naming_it(
    project: MiniProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.core import compute

    monkeypatch.setenv("PLUMBER_DASK_ADDRESS", "tcp://127.0.0.1:9")
    cfg = section("compute", connect_timeout_seconds=2)
    expected = (r"compute: no Dask scheduler answers at tcp://127.0.0.1:9 "
                r"\(from PLUMBER_DASK_ADDRESS\) within 2 s")  # fmt: skip
    with pytest.raises(StepError, match=expected), compute.mapper(cfg):
        pass


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_a_stage_killed_leaves_no_worker_of_its_cluster_behind(project: MiniProject) -> None:
    """`python -m tasks.validate` on a local cluster of 2, SIGKILLed (the stage alone, as an
    OOM kill would): its workers notice their scheduler is gone and exit."""
    from tests.factories import kill, leftovers

    a_month(project)
    text = (project.root / "params.yaml").read_text()
    (project.root / "params.yaml").write_text(text.replace("\n  workers: 1\n", "\n  workers: 2\n"))
    for folder in ("data/validated", "data/quarantine"):
        (project.root / folder).rename(project.root / f"{folder}.old")  # all to check again
    stage = subprocess.Popen([sys.executable, "-m", "tasks.validate"], cwd=project.root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert wait_until(lambda: len(leftovers(project.root)) >= 3, timeout=120), "no workers"
    kill(stage)
    assert wait_until(lambda: not leftovers(project.root), timeout=120), leftovers(project.root)


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_the_run_s_cluster_serves_every_stage_and_goes_with_it(
    project: MiniProject, tmp_path: Path
) -> None:
    """What the flow does with compute.workers: 2: one cluster for the run, whose address
    the stages it starts find; both steps' batches go there; then nothing is left."""
    from tasks.core.cluster import for_the_stages

    a_month(project)

    def steps_as_dvc_runs_them() -> dict[str, bytes]:
        for folder in OUTPUTS:
            shutil.rmtree(project.root / folder)
        for step in ("validate", "featurize"):
            done = subprocess.run([sys.executable, "-m", f"tasks.{step}"], cwd=project.root,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            logs.append(done.stderr)
        return outputs(project)

    logs: list[str] = []
    in_process = steps_as_dvc_runs_them()
    folder = tmp_path / "dask"
    with for_the_stages(section("compute", workers=2), folder, root=ROOT) as address:
        assert address and os.environ["PLUMBER_DASK_ADDRESS"] == address
        logs.clear()
        assert steps_as_dvc_runs_them() == in_process
        for log in logs:  # each step sent its batches to the run's cluster
            assert f"compute: scheduler {address} (2 workers)" in log, log
        assert len(Cluster(address).worker_pids()) == 2
    assert "PLUMBER_DASK_ADDRESS" not in os.environ
    assert not folder.exists() and not cluster_processes(folder)


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_a_cluster_goes_with_the_process_that_started_it_even_on_sigkill(tmp_path: Path) -> None:
    """The flow's process SIGKILLed with its cluster up: the guards stop every part."""
    from tests.factories import kill

    folder = tmp_path / "dask"
    starter = ("import os, time; from pathlib import Path; "
               "from tasks.core.cluster import running_cluster\n"
               "with running_cluster(2, Path(os.environ['FOLDER']), root=Path.cwd()) as address:\n"
               "    print(address, flush=True); time.sleep(600)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", starter], cwd=ROOT, text=True,
                            env={**os.environ, "FOLDER": str(folder)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://127.0.0.1:")
        # The scheduler and two workers, each under its guard.
        assert len(cluster_processes(folder)) == 6, cluster_processes(folder)
    finally:
        kill(proc)
    assert wait_until(lambda: not cluster_processes(folder), timeout=120), cluster_processes(folder)


def test_a_cluster_that_cannot_start_is_one_error_quoting_its_log(tmp_path: Path) -> None:
    # A checkout whose code shadows dask with a broken package: the scheduler cannot start.
    broken = tmp_path / "checkout" / "dask"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('this dask is broken')\n")
    expected = (r"compute: the Dask scheduler did not start \(a part exited\): "
                r"scheduler: ImportError: this dask is broken$")  # fmt: skip
    with (
        pytest.raises(StepError, match=expected),
        running_cluster(2, tmp_path / "dask", root=broken.parent, timeout=60),
    ):
        pass
    assert not cluster_processes(tmp_path / "dask")
