"""Prefect workers with nothing but Python and the project's git URL run the deployed flow:
each run clones the code at the deployed commit, installs the lock, restores the latest
data version from the stack and records the next one (issue: workers on any machine).

Two workers stand for two machines; each runs only while it is the one meant to take the
next run, so both are seen to work, one after the other, on one line of data versions.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows import stack
from tasks.core.paths import Paths
from tasks.core.stack import read_profile
from tests.factories import LENIENT_GATE, copy_repo, env_for, small_demo_params
from tests.test_shared_stack import data_versions

pytestmark = [pytest.mark.drill, pytest.mark.postgres]
PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("workers")
    ops = Paths.at(base / "ops")
    stack.up(ops, f"plumbertest_{uuid.uuid4().hex[:6]}", 600, print)
    origin = copy_repo(base / "origin")
    small_demo_params(origin, release=LENIENT_GATE)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam",
                    "team settings"], cwd=origin, check=True)  # fmt: skip
    upstream = origin / "var" / "upstream"
    env = env_for(
        PLUMBER_STACK=str(stack.profile_file(ops)),
        PLUMBER_GIT_URL=str(origin),
        PLUMBER_FLIGHTS_URL=f"sqlite:///{upstream / 'flights.db'}",
        PLUMBER_WEATHER_DROP=str(upstream / "drop" / "weather"),
        PLUMBER_REFERENCE_DIR=str(upstream / "reference"),
    )
    env.update(read_profile(stack.profile_file(ops)))  # prefect's own CLI reads these
    demo = subprocess.run(["plumber", "demo", "init", "--now", "2013-01-04"], cwd=origin,
                          env=env_for(), capture_output=True, text=True)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    deployed = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=origin, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert deployed.returncode == 0 and "Traceback" not in deployed.stderr, deployed.stderr
    yield {"base": base, "origin": origin, "env": env, "ops": ops}
    stack.down(ops, purge=True, say=print)


def start_worker(world: dict[str, Any], name: str) -> subprocess.Popen[bytes]:
    home = world["base"] / name  # the machine: its own folder, no checkout in it
    home.mkdir(exist_ok=True)
    with (home / "worker.log").open("ab") as log:
        return subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "plumber", "--name", name, "--type", "process"],
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


def run_deployment(world: dict[str, Any]) -> dict[str, Any]:
    """Start a run of the daily deployment and wait for it; its flow run as JSON."""
    started = subprocess.run(
        [PREFECT, "deployment", "run", "plumber/plumber-daily", "--watch",
         "--watch-timeout", "1200"],
        cwd=world["base"], env=world["env"], capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    code = (
        "import json, sys\nfrom prefect import get_client\nimport asyncio\n"
        "async def main():\n"
        "    async with get_client() as c:\n"
        "        runs = await c.read_flow_runs(limit=1, sort='START_TIME_DESC')\n"
        "        r = runs[0]\n"
        "        print(json.dumps({'id': str(r.id), 'state': r.state.type.value}))\n"
        "asyncio.run(main())\n"
    )
    read = subprocess.run([sys.executable, "-c", code], env=world["env"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert read.returncode == 0, read.stderr
    return {**json.loads(read.stdout), "out": started.stdout + started.stderr}


def written(world: dict[str, Any]) -> int:
    """Bytes the object store has accepted so far (its journal of writes, decoded)."""
    import base64

    journal = stack.home(world["ops"]) / "object-store" / "writes.jsonl"
    lines = journal.read_bytes().splitlines() if journal.exists() else []
    return sum(len(base64.b64decode(json.loads(line)["body"])) for line in lines)


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
        f"{(written(world) - before) / 1e6:.2f} MB written to the object store"
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


def _log(world: dict[str, Any], name: str) -> str:
    path = world["base"] / name / "worker.log"
    return path.read_text(errors="replace") if path.exists() else ""
