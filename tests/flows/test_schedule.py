"""Scheduled runs as a user has them: `plumber serve` on the embedded local server, with
the deployment's cron set to every minute in params.yaml, and nothing started by hand.
The test waits for Prefect's scheduler to create a run by itself and for that run to end
in its decision state. (Prefect 3.8.8 on SQLAlchemy 2.1 created no scheduled run at all,
while runs started by hand worked: only a test that waits for the scheduler finds that.)
The same on the stack, through a worker from a fresh clone: tests/test_workers.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import local_server
from tasks.core.paths import Paths
from tests.factories import (
    BIN,
    BUSY_STATES,
    LENIENT_GATE,
    copy_repo,
    env_for,
    leftovers,
    prefect_call,
    scheduled_runs_ended,
    small_demo_params,
    stop_scheduling,
)

pytestmark = [pytest.mark.slow, pytest.mark.drill]

EVERY_MINUTE = "* * * * *"


def wait_for_scheduled_run(api: str, serving: Any, log: Path, timeout: float) -> dict[str, Any]:
    """The first run the scheduler created, once it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert serving.poll() is None, f"plumber serve exited:\n{log.read_text()[-4000:]}"
        ended = scheduled_runs_ended(api)
        if ended:
            return ended[0]
        time.sleep(2)
    pytest.fail(f"no scheduled run ended within {timeout:g} s:\n{log.read_text()[-4000:]}")


@pytest.mark.timeout(1500)
def test_plumber_serve_runs_the_flow_when_the_scheduler_fires(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    serve = {**params["flow"]["serve"], "cron": EVERY_MINUTE}
    small_demo_params(repo, release=LENIENT_GATE, flow={"serve": serve})
    env = env_for()
    init = subprocess.run([str(BIN / "plumber"), "demo", "init", "--now", "2013-01-04"],
                          cwd=repo, env=env, capture_output=True, text=True)  # fmt: skip
    assert init.returncode == 0, init.stderr

    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serving = subprocess.Popen([str(BIN / "plumber"), "serve"], cwd=repo, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    paths = Paths.at(repo)
    try:
        state = None
        deadline = time.monotonic() + 600
        while state is None and time.monotonic() < deadline:
            assert serving.poll() is None, log.read_text()[-4000:]
            state = local_server.read_state(paths)
            time.sleep(1)
        assert state is not None, log.read_text()[-4000:]
        api = local_server.api_url(state)
        run = wait_for_scheduled_run(api, serving, log, timeout=1200)
        stop_scheduling(api, run["deployment_id"])
    finally:
        os.killpg(serving.pid, signal.SIGINT)  # Ctrl-C, as a user stops it
        try:
            serving.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(serving.pid, signal.SIGKILL)
            serving.wait()
    served = log.read_text()
    print(served[-3000:])
    assert run["state_type"] == "COMPLETED", served[-4000:]
    assert run["state_name"] == "Released", run["state_name"]  # its decision, not "Completed"
    assert run["deployment_id"] and run["auto_scheduled"] is True
    assert "serving deployment plumber/plumber-daily: cron '* * * * *'" in served
    runs = prefect_call(f"{api}/flow_runs/filter", {})
    assert not [r for r in runs if r["state_type"] in BUSY_STATES]
    local_server.stop(paths)
    assert not leftovers(repo), leftovers(repo)
