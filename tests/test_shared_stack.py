"""Two machines, one stack: runs on two fresh clones (empty var/, empty DVC cache) continue
each other's data through the shared record, and a run killed on one is repaired by the
next on the other (issue: shared servers, workers on any machine).

The stack is the loopback one (`make stack-up`); the demo upstream lives in a third
folder both clones reach through the source variables, as real sources would be reached.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.core.profile import read_profile
from tests.factories import LENIENT_GATE, copy_repo, env_for, small_demo_params, stack, stack_up

pytestmark = [pytest.mark.drill, pytest.mark.postgres]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[dict[str, Any]]:
    """The stack, the upstream, and two clones of one origin standing for two machines."""
    base = tmp_path_factory.mktemp("shared")
    ops = base / "ops"
    profile = stack_up(ops, f"plumbertest_{uuid.uuid4().hex[:6]}")
    origin = copy_repo(base / "origin")
    small_demo_params(origin, release=LENIENT_GATE)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam",
                    "team settings"], cwd=origin, check=True)  # fmt: skip
    upstream = origin / "var" / "upstream"
    env = {
        "PLUMBER_STACK": str(profile),
        "PLUMBER_FLIGHTS_URL": f"sqlite:///{upstream / 'flights.db'}",
        "PLUMBER_WEATHER_DROP": str(upstream / "drop" / "weather"),
        "PLUMBER_REFERENCE_DIR": str(upstream / "reference"),
    }
    ok(run(origin, ["demo", "init", "--now", "2013-01-04"], {}))
    machines = {}
    for machine in ("a", "b"):
        machines[machine] = base / machine
        subprocess.run(["git", "clone", "-q", str(origin), str(machines[machine])], check=True)
    yield {"origin": origin, "env": env, "ops": ops, **machines}
    assert stack(ops, "down", "--purge").returncode == 0


def run(cwd: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["plumber", *args], cwd=cwd, env=env_for(**env),
                          capture_output=True, text=True, timeout=1200)  # fmt: skip


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}:\n{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def data_versions(world: dict[str, Any]) -> list[dict[str, str]]:
    """Every recorded data version, oldest first, read from the stack's MLflow."""
    found = experiment_runs(world, "plumber-data")
    return sorted(found, key=lambda tags: int(tags["data_version.seq"]))


def experiment_runs(world: dict[str, Any], experiment: str) -> list[dict[str, str]]:
    """Every run of an experiment on the stack's MLflow: its tags, run_id and status."""
    code = (
        "import json, sys, mlflow\n"
        "c = mlflow.MlflowClient()\n"
        "e = c.get_experiment_by_name(sys.argv[1])\n"
        "runs = c.search_runs([e.experiment_id]) if e else []\n"
        "print(json.dumps([{**r.data.tags, 'run_id': r.info.run_id, 'status': r.info.status} "
        "for r in runs]))\n"
    )
    env = env_for(**world["env"])
    env.update(read_profile(Path(world["env"]["PLUMBER_STACK"])))
    done = subprocess.run(["python", "-c", code, experiment], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def manifest(machine: Path) -> dict[str, Any]:
    return dict(json.loads((machine / "data" / "raw" / "manifest.json").read_text()))


def test_two_machines_continue_one_line_of_data_versions(world: dict[str, Any]) -> None:
    a, b, env = world["a"], world["b"], world["env"]
    assert not (b / "var").exists() and not (b / ".dvc" / "cache").exists()
    out = ok(run(a, ["run"], env))
    assert "restore: no data version recorded yet" in out
    ok(run(world["origin"], ["demo", "advance", "--days", "1"], {}))

    out = ok(run(b, ["run"], env))  # a fresh clone: restores a's version, then collects
    assert "restore: restored data version 1" in out
    first, second = data_versions(world)
    assert (first["data_version.seq"], second["data_version.seq"]) == ("1", "2")
    assert second["data_version.parent"] == first["run_id"]
    days_b = manifest(b)["sources"]["flights"]["partitions"]
    assert len(days_b) == 4, "b holds a's three days and the new one"
    # b collected only the new day: its rows are a's plus that day's
    assert manifest(b)["sources"]["flights"]["watermark"] > "2013-01-04"


def test_a_run_killed_on_one_machine_is_repaired_by_the_next_on_the_other(
    world: dict[str, Any],
) -> None:
    a, b, env = world["a"], world["b"], world["env"]
    ok(run(world["origin"], ["demo", "advance", "--days", "1"], {}))
    killed = subprocess.Popen(["plumber", "run"], cwd=a, env=env_for(**env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    holder = a / "var" / "stage.holder.json"
    deadline = time.monotonic() + 900
    while "validate" not in (holder.read_text() if holder.exists() else ""):
        assert killed.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # a's collect finished; nothing recorded
    killed.wait()
    before = len(data_versions(world))

    out = ok(run(b, ["run"], env))  # the other machine: the shared run lock is free
    versions = data_versions(world)
    assert len(versions) == before + 1
    assert all(v["status"] == "FINISHED" for v in versions)
    seqs = [int(v["data_version.seq"]) for v in versions]
    assert seqs == list(range(1, len(versions) + 1)), "one line: no version twice"
    for parent, child in itertools.pairwise(versions):
        assert child["data_version.parent"] == parent["run_id"]

    out = ok(run(a, ["run"], env))  # a's unrecorded work is replaced by the latest
    assert "restored data version" in out
    assert manifest(a) == manifest(b)
    lock = yaml.safe_load((a / "dvc.lock").read_text())
    assert lock == yaml.safe_load((b / "dvc.lock").read_text()), out[-6000:]
    assert len(data_versions(world)) == len(versions), "nothing new: a adds no version"
