"""Prefect workers with nothing but Python and the project's git URL run the deployed flow:
each run clones the code at the deployed commit, installs the lock, restores the latest
data version from the stack and records the next one (issue: workers on any machine).

Two workers stand for two machines; each runs only while it is the one meant to take the
next run, so both are seen to work, one after the other, on one line of data versions.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.control import read_state, url
from devstack.provision import LOOPBACK_KEYS
from tasks.core.profile import read_profile
from tests.factories import (
    DECISIONS,
    LENIENT_GATE,
    copy_repo,
    env_for,
    scheduled_runs_ended,
    small_demo_params,
    stack,
    stack_up,
    stop_scheduling,
)
from tests.test_shared_stack import data_versions, experiment_runs

pytestmark = [pytest.mark.drill, pytest.mark.postgres]
PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("workers")
    ops = base / "ops"
    profile = stack_up(ops, f"plumbertest_{uuid.uuid4().hex[:6]}")
    origin = copy_repo(base / "origin")
    small_demo_params(origin, release=LENIENT_GATE)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam",
                    "team settings"], cwd=origin, check=True)  # fmt: skip
    upstream = origin / "var" / "upstream"
    env = env_for(
        PLUMBER_STACK=str(profile),
        PLUMBER_GIT_URL=str(origin),
        PLUMBER_FLIGHTS_URL=f"sqlite:///{upstream / 'flights.db'}",
        PLUMBER_WEATHER_DROP=str(upstream / "drop" / "weather"),
        PLUMBER_REFERENCE_DIR=str(upstream / "reference"),
    )
    env.update(read_profile(profile))  # prefect's own CLI reads these
    demo = subprocess.run(["plumber", "demo", "init", "--now", "2013-01-04"], cwd=origin,
                          env=env_for(), capture_output=True, text=True)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    deployed = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=origin, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert deployed.returncode == 0 and "Traceback" not in deployed.stderr, deployed.stderr
    yield {"base": base, "origin": origin, "env": env, "ops": ops}
    assert stack(ops, "down", "--purge").returncode == 0


def own_hostnames() -> bool:
    """Whether each machine can have a hostname of its own (a UTS namespace: root here)."""
    try:
        done = subprocess.run(["unshare", "--uts", "hostname", "probe"], capture_output=True)
    except OSError:
        return False
    return done.returncode == 0


def start_worker(world: dict[str, Any], name: str) -> subprocess.Popen[bytes]:
    home = world["base"] / name  # the machine: its own folder, no checkout in it
    home.mkdir(exist_ok=True)
    command = [PREFECT, "worker", "start", "--pool", "plumber", "--name", name, "--type",
               "process"]  # fmt: skip
    if own_hostnames():  # and its own hostname, which MLflow runs and locks are tagged with
        command = ["unshare", "--uts", "sh", "-c", f'hostname {name} && exec "$@"', "-", *command]
    with (home / "worker.log").open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=home, env={**world["env"], "PREFECT_HOME": str(home / ".prefect")},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def run_deployment(world: dict[str, Any], *args: str, watch: bool = True) -> dict[str, Any]:
    """Start a run of the daily deployment (and wait for it); its flow run as JSON."""
    waiting = ["--watch", "--watch-timeout", "1200"] if watch else []
    started = subprocess.run(
        [PREFECT, "deployment", "run", "plumber/plumber-daily", *waiting, *args],
        cwd=world["base"], env=world["env"], capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    out = started.stdout + started.stderr
    found = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert found, out[-3000:]
    return {**flow_run(world, found.group(1)), "out": out}


def flow_run(world: dict[str, Any], run_id: str) -> dict[str, str]:
    """A flow run's id, name and state type, asked of the stack's Prefect server."""
    code = (
        "import asyncio, json, sys\nfrom uuid import UUID\nfrom prefect import get_client\n"
        "async def main():\n"
        "    async with get_client() as c:\n"
        "        r = await c.read_flow_run(UUID(sys.argv[1]))\n"
        "        print(json.dumps({'id': str(r.id), 'name': r.name, 'state': r.state.type.value,"
        " 'message': r.state.message}))\n"
        "asyncio.run(main())\n"
    )
    read = subprocess.run([sys.executable, "-c", code, run_id], env=world["env"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert read.returncode == 0, read.stderr
    return dict(json.loads(read.stdout))


def written(world: dict[str, Any]) -> int:
    """Bytes the object store holds now, every object of every bucket (its S3 API)."""
    import boto3

    store = url(read_state(world["ops"]), "object-store")
    keys = LOOPBACK_KEYS
    s3 = boto3.client("s3", endpoint_url=store, aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
                      region_name=keys["AWS_DEFAULT_REGION"])  # fmt: skip
    pages = [page for bucket in s3.list_buckets()["Buckets"]
             for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])]  # fmt: skip
    return sum(obj["Size"] for page in pages for obj in page.get("Contents", []))


def run_on(world: dict[str, Any], machine: str) -> str:
    """One run of the deployment, taken by the worker of `machine` (the only one up)."""
    before, started = written(world), time.monotonic()
    worker = start_worker(world, machine)
    try:
        done = run_deployment(world)
    finally:
        stop_worker(worker)
    log = _log(world, machine)
    assert done["state"] == "COMPLETED", done["out"][-4000:] + log[-6000:]
    assert f"submitting flow run '{done['id']}'" in log
    print(
        f"{machine}: run {time.monotonic() - started:.0f} s (worker start included), "
        f"{(written(world) - before) / 1e6:.2f} MB more in the object store"
    )
    return log


def advance(world: dict[str, Any]) -> None:
    done = subprocess.run(["plumber", "demo", "advance", "--days", "1"], cwd=world["origin"],
                          env=env_for(), capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_two_workers_from_fresh_clones_continue_each_others_data(world: dict[str, Any]) -> None:
    assert "data version 1 recorded" in run_on(world, "machine-a")
    advance(world)
    log = run_on(world, "machine-b")
    assert "restore: restored data version 1" in log and "data version 2 recorded" in log
    advance(world)
    assert "data version 3 recorded" in run_on(world, "machine-a")  # the third day
    versions = data_versions(world)
    assert [int(v["data_version.seq"]) for v in versions] == [1, 2, 3]
    for parent, child in itertools.pairwise(versions):  # one line: each on the one before
        assert child["data_version.parent"] == parent["run_id"]
    for machine in ("machine-a", "machine-b"):  # each run's clone went with it
        assert not list((world["base"] / machine).glob("**/dvc.lock"))


def test_the_registry_moved_only_by_the_gate_and_the_champion_rebuilds_from_a_third_clone(
    world: dict[str, Any],
) -> None:
    third = world["base"] / "machine-c"
    subprocess.run(["git", "clone", "-q", str(world["origin"]), str(third)], check=True)
    env = {k: world["env"][k] for k in ("PLUMBER_STACK",)}
    releases = subprocess.run(["plumber", "releases", "--json"], cwd=third, env=env_for(**env),
                              capture_output=True, text=True)  # fmt: skip
    assert releases.returncode == 0, releases.stderr
    history = json.loads(releases.stdout)
    history = history.get("history", history) if isinstance(history, dict) else history
    assert [entry["seq"] for entry in history] == list(range(1, len(history) + 1))
    assert history and all(e["action"] == "release" and not e["forced"] for e in history)
    rebuilt = subprocess.run(["plumber", "reproduce", "champion"], cwd=third, env=env_for(**env),
                             capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stdout[-2000:] + rebuilt.stderr[-3000:]
    assert "identical" in rebuilt.stdout


@pytest.mark.timeout(1800)  # a training to kill, then Prefect's grace for the dead run's slot
def test_a_worker_killed_mid_run_is_repaired_by_the_next_run_on_the_other(
    world: dict[str, Any],
) -> None:
    if not own_hostnames():
        pytest.skip("needs `unshare --uts` (root) so that the two machines have two hostnames")
    advance(world)  # the fourth day
    before = data_versions(world)
    worker = start_worker(world, "machine-a")
    try:
        # Trained long enough that the kill lands in training, whatever the machine's load.
        slow = json.dumps({"overrides": {"train": {"epochs": 5000, "patience": 5000}}})
        doomed = run_deployment(world, "--params", slow, watch=False)
        training = wait_for_training(world, doomed["id"], worker)
        killed = kill_machine(world["base"] / "machine-a")  # as if it lost power
        assert worker.pid in killed
    finally:
        if worker.poll() is None:
            stop_worker(worker)
    assert flow_run(world, doomed["id"])["state"] == "RUNNING"  # nobody left to say otherwise
    assert not machine_processes(world["base"] / "machine-a")

    log = run_on(world, "machine-b")  # waits out the dead run's slot, then runs
    assert f"the previous flow run {doomed['name']} crashed" in log
    dead = flow_run(world, doomed["id"])
    assert dead["state"] == "CRASHED" and "held the run lock" in dead["message"]
    runs = {r["run_id"]: r for r in experiment_runs(world, "plumber")}
    assert runs[training]["status"] == "KILLED"
    assert doomed["id"] in runs[training]["plumber.end_reason"]
    assert not [r for r in runs.values() if r["status"] == "RUNNING"]
    versions = data_versions(world)  # the dead run recorded nothing; the next one did
    assert [int(v["data_version.seq"]) for v in versions] == list(range(1, len(before) + 2))
    assert versions[-1]["data_version.parent"] == before[-1]["run_id"]
    assert not machine_processes(world["base"] / "machine-b")


def wait_for_training(world: dict[str, Any], flow_run_id: str, worker: Any) -> str:
    """The id of the MLflow training run of `flow_run_id`, once it runs."""
    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline:
        assert worker.poll() is None, _log(world, "machine-a")[-4000:]
        for run in experiment_runs(world, "plumber"):
            if run.get("prefect.flow_run_id") == flow_run_id and run["status"] == "RUNNING":
                return str(run["run_id"])
        time.sleep(3)
    pytest.fail("the run never reached training: " + _log(world, "machine-a")[-4000:])


def machine_processes(home: Path) -> list[int]:
    """Processes of the machine whose folder is `home`: its worker and all it started,
    known by the PREFECT_HOME they inherit."""
    mark = f"PREFECT_HOME={home / '.prefect'}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def kill_machine(home: Path) -> list[int]:
    """SIGKILL every process of the machine at once, as a power cut would."""
    pids = machine_processes(home)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while machine_processes(home) and time.monotonic() < deadline:
        time.sleep(0.2)  # zombies until their parents are reaped: ours is, below
    return pids


def _log(world: dict[str, Any], name: str) -> str:
    path = world["base"] / name / "worker.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.timeout(1800)
def test_the_scheduler_fires_the_deployed_flow_and_a_fresh_worker_runs_it(
    world: dict[str, Any],
) -> None:
    """Nothing started by hand: a one-minute schedule on the deployment (as `prefect
    deployment schedule create` adds one), and a worker; the stack's scheduler creates the
    run by itself, the worker clones and runs it, and it ends in its decision state."""
    added = subprocess.run(
        [PREFECT, "deployment", "schedule", "create", "plumber/plumber-daily", "--cron",
         "* * * * *", "--timezone", "UTC"],
        cwd=world["base"], env=world["env"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    api = world["env"]["PREFECT_API_URL"]
    worker = start_worker(world, "machine-a")
    try:
        deadline = time.monotonic() + 1500
        while not (ended := scheduled_runs_ended(api)) and time.monotonic() < deadline:
            assert worker.poll() is None, _log(world, "machine-a")[-4000:]
            time.sleep(3)
        assert ended, "no scheduled run ended:\n" + _log(world, "machine-a")[-4000:]
        run = ended[0]
        stop_scheduling(api, run["deployment_id"])
    finally:
        stop_worker(worker)
    log = _log(world, "machine-a")
    print(log[-3000:])
    assert run["state_type"] == "COMPLETED", log[-4000:]
    assert run["state_name"] in DECISIONS and run["auto_scheduled"] is True, run["state_name"]
    assert f"submitting flow run '{run['id']}'" in log  # this worker took it
