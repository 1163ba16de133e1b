"""`make stack-up|stack-down|stack-status` (devstack/) with real servers on loopback, run
by supervisord: MLflow on PostgreSQL with its artifacts in the object store, Prefect on
PostgreSQL with a work pool, the DVC remote in the object store; everything stops with
`down`, and `up` serves again (MLflow's runs back from PostgreSQL; the object store, in
memory, empty)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from devstack import control as devstack
from devstack import provision
from tasks.core.processes import alive
from tasks.core.profile import read_profile
from tests.factories import stack, stack_up

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def in_stack(
    profile: Path, argv: list[str], cwd: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    """A command run the way a user's is: the profile's variables in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env.update(read_profile(profile), **extra)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


LOG_RUN = """
import mlflow
mlflow.set_experiment("stack-test")
with mlflow.start_run() as run:
    mlflow.log_metric("m", 0.5)
    mlflow.log_text("hello from a worker", "notes/hello.txt")
print(run.info.run_id)
"""
READ_RUN = """
import sys, mlflow
print(mlflow.get_run(sys.argv[1]).data.metrics["m"])
print(mlflow.artifacts.load_text(f"runs:/{sys.argv[1]}/notes/hello.txt"))
"""


def test_stack_up_serves_every_part_down_stops_all_and_up_serves_again(
    pg_url: str, tmp_path: Path
) -> None:
    ops = tmp_path / "project"
    name = f"plumbertest_{uuid.uuid4().hex[:6]}"
    repo = tmp_path / "repo"
    try:
        profile = stack_up(ops, name)
        assert oct(profile.stat().st_mode & 0o777) == "0o600"
        values = read_profile(profile)
        assert values["PLUMBER_DVC_REMOTE"] == f"s3://{name.replace('_', '-')}/dvc"
        assert values["PLUMBER_LOCKS_URL"].endswith(f"/{name}_coord")
        shown = stack(ops, "status", "--json")
        services = json.loads(shown.stdout)["services"]
        assert shown.returncode == 0 and {s: r["answering"] for s, r in services.items()} == {
            "object-store": True, "mlflow": True, "prefect": True}  # fmt: skip
        # No database URL on a command line, where `ps` shows it to every user.
        assert not [s for s, r in services.items() if "postgresql" in cmdline(r["pid"])]

        run_id = _use_every_part(profile, repo)
        _an_object_store_down_is_named(profile, repo, ops)
        assert stack(ops, "up", "--name", name).returncode == 0  # starts the store again
        pids = [r["pid"] for r in services.values()]
        down = stack(ops, "down")
        assert down.returncode == 0 and "stopped" in down.stderr
        assert not any(alive(pid) for pid in pids), "a service outlived `stack-down`"
        assert stack(ops, "status").returncode == 1  # none answers

        stack_up(ops, name)  # the same state, read back
        _up_again_serves(profile, repo, run_id)
    finally:
        stack(ops, "down", "--purge")
    assert not (ops / "var" / "stack").exists()
    assert not _databases_named(pg_url, name), "`down --purge` left databases behind"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _use_every_part(profile: Path, repo: Path) -> str:
    """MLflow through the server (artifact into the object store), DVC push to the remote,
    Prefect's CLI against the server: each as a separate process, as a worker would."""
    logged = in_stack(profile, [sys.executable, "-c", LOG_RUN], repo.parent)
    assert logged.returncode == 0, logged.stderr
    run_id = logged.stdout.strip().splitlines()[-1]
    read = in_stack(profile, [sys.executable, "-c", READ_RUN, run_id], repo.parent)
    assert read.stdout.split("\n")[:2] == ["0.5", "hello from a worker"], read.stderr
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert in_stack(profile, dvc("init", "-q"), repo).returncode == 0
    (repo / "data.bin").write_bytes(os.urandom(200_000))
    assert in_stack(profile, dvc("add", "-q", "data.bin"), repo).returncode == 0
    remote = read_profile(profile)["PLUMBER_DVC_REMOTE"]
    assert (
        in_stack(profile, dvc("remote", "add", "--local", "-d", "stack", remote), repo).returncode
        == 0
    )
    pushed = in_stack(profile, dvc("push"), repo)
    assert pushed.returncode == 0 and "1 file pushed" in pushed.stdout, pushed.stderr
    prefect = str(Path(sys.executable).parent / "prefect")
    for argv in ([prefect, "flow-run", "ls"], [prefect, "work-pool", "ls"]):
        done = in_stack(profile, argv, repo)
        # the pinned Prefect/fastapi pair: no 422 on the filters Prefect's client sends
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert provision.POOL in in_stack(profile, [prefect, "work-pool", "ls"], repo).stdout
    return run_id


LOG_WITH_STORE_DOWN = """
import mlflow
from tasks.core.tracking import artifact_store_down
mlflow.set_experiment("stack-test")
try:
    with mlflow.start_run():
        mlflow.log_text("never stored", "notes/lost.txt")
except Exception as exc:
    print(artifact_store_down(exc))
"""


def _an_object_store_down_is_named(profile: Path, repo: Path, ops: Path) -> None:
    """An artifact sent through MLflow's proxy while the object store behind it is down:
    MLflow's error names its own server; Plumber's line names the store and its address."""
    assert devstack.stop_service(ops, "object-store")
    done = in_stack(
        profile,
        [sys.executable, "-c", LOG_WITH_STORE_DOWN],
        repo.parent,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
    )  # as params' tracking.request_retries
    store = read_profile(profile)["AWS_ENDPOINT_URL"]
    last = (done.stdout.splitlines() or [""])[-1]  # after MLflow's "View run" lines
    assert last.startswith(f"the object store at {store} does not answer"), (
        done.stdout + done.stderr[-2000:]
    )


def _up_again_serves(profile: Path, repo: Path, run_id: str) -> None:
    """After `down` and `up`: MLflow's runs are back (PostgreSQL keeps them); the object
    store, moto in memory, a store for development, is empty and takes the data again."""
    read = in_stack(profile, [sys.executable, "-c", READ_RUN, run_id], repo)
    assert read.stdout.split("\n")[0] == "0.5", read.stderr
    assert read.returncode != 0  # its artifact went with the store
    pushed = in_stack(profile, dvc("push"), repo)
    assert pushed.returncode == 0 and "1 file pushed" in pushed.stdout, pushed.stderr
    expected = (repo / "data.bin").read_bytes()
    (repo / "data.bin").unlink()
    subprocess.run(["rm", "-rf", str(repo / ".dvc" / "cache")], check=True)
    pulled = in_stack(profile, dvc("pull"), repo)
    assert pulled.returncode == 0, pulled.stderr
    assert (repo / "data.bin").read_bytes() == expected


def _databases_named(pg_url: str, name: str) -> list[Any]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}%",))
        return rows.fetchall()
