"""The pipeline on a busy machine: two processes keep both cores loaded while a fresh copy
starts its local Prefect server, trains the full-size model and releases it. Nothing may
depend on a wall-clock timer a neighbour can stretch: the server's start is waited for,
and the release gate judges the model's own CPU time per row, not the wall clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.factories import LENIENT_GATE, copy_repo, env_for, leftovers, stop_local_server

pytestmark = [pytest.mark.slow, pytest.mark.drill]

BUSY = "while True: pass"


@pytest.fixture
def busy_cores() -> Iterator[list[subprocess.Popen[bytes]]]:
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(os.cpu_count() or 2)]
    yield hogs
    for hog in hogs:
        hog.kill()
        hog.wait()


def test_a_run_on_a_busy_machine_releases_a_champion(
    tmp_path: Path, busy_cores: list[subprocess.Popen[bytes]]
) -> None:
    repo = copy_repo(tmp_path / "busy")
    env = env_for()
    subprocess.run(["plumber", "demo", "init", "--now", "2013-01-04"], cwd=repo, env=env,
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["featurize"].update(test_days=1, valid_days=1, min_category_count=1)
    params["train"].update(epochs=2)  # the full-size model (8 members): its real latency
    params["release"].update(LENIENT_GATE)  # quality floors off; latency and size budgets on
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        done = subprocess.run(["plumber", "run"], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=1800)  # fmt: skip
        assert all(hog.poll() is None for hog in busy_cores)  # the load lasted the whole run
        assert done.returncode == 0, done.stderr[-3000:]
        assert "decision: released, candidate version 1" in done.stdout, done.stdout[-2000:]
        status = json.loads(subprocess.run(["plumber", "status", "--json"], cwd=repo, env=env,
                                           capture_output=True, text=True).stdout)  # fmt: skip
        assert status["champion"]["version"] == "1"
        assert leftovers(repo) == []
    finally:
        stop_local_server(repo)
