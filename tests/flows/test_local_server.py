"""The local Prefect server: started once, reused, pruned, stopped when asked, its output
kept in its log; a start that fails is one clear line. Real servers on loopback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows import local_server
from tasks.core.paths import Paths
from tests.factories import section, wait_until

pytestmark = pytest.mark.slow


def processes_of(paths: Paths) -> list[str]:
    """The processes started with this project's server folder, by their environment."""
    home = f"PREFECT_HOME={local_server.folder(paths)}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if home in environ.read_bytes().split(b"\0"):
                found.append(environ.parent.name)
        except OSError:
            continue  # gone, or not ours to read
    return found


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[Paths]:
    """A project folder whose local server, if a test started one, is stopped afterwards
    whatever the test's outcome."""
    paths = Paths.at(tmp_path)
    yield paths
    local_server.stop(paths)


def test_started_once_reused_pruned_and_stopped(paths: Paths) -> None:
    said: list[str] = []
    cfg = section("flow.server", port=local_server.free_port())
    url = local_server.ensure(paths, cfg, said.append)
    assert url == f"http://127.0.0.1:{cfg.port}/api" and said[0].startswith("starting the local")
    first = local_server.read_state(paths)
    assert first is not None and local_server.healthy(first["url"])
    # Its UI calls this server, not the one on Prefect's default port (4200).
    assert httpx.get(f"{first['url']}/ui-settings", timeout=30).json()["api_url"] == url
    started = len(said)  # "starting ...", and on a busy machine "still waiting ..." lines
    assert local_server.ensure(paths, cfg, said.append) == url  # reused: nothing started
    assert local_server.read_state(paths) == first and len(said) == started

    call = local_server.call
    with httpx.Client(base_url=url, timeout=30) as client:  # five flow runs of one flow
        flow_id = call(client, "POST", "/flows/", json={"name": "drill"}).json()["id"]
        for _ in range(5):
            call(client, "POST", "/flow_runs/", json={"flow_id": flow_id})
        assert local_server.prune_history(url, keep=2) == 3
        assert len(call(client, "POST", "/flow_runs/filter", json={"limit": 50}).json()) == 2

    log = (local_server.folder(paths) / "server.log").read_text()
    assert f"dashboard at http://127.0.0.1:{cfg.port}" in log  # its output is kept
    assert local_server.stop(paths) is True
    assert not local_server.healthy(first["url"], timeout=1)
    assert wait_until(lambda: not processes_of(paths), timeout=30), processes_of(paths)
    assert local_server.stop(paths) is False  # nothing left to stop


def test_a_server_that_dies_while_starting_is_one_clear_error(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "print('address already in use')"])
    dead.wait()
    log = tmp_path / "server.log"
    log.write_text("Traceback ...\nOSError: [Errno 98] address already in use\n")
    state = {"pid": dead.pid, "url": "http://127.0.0.1:9"}
    with pytest.raises(local_server.ServerError) as err:
        local_server.wait_ready(state, limit=600, say=lambda line: None, log=log)
    assert str(err.value).startswith(
        "the local Prefect server exited while starting (OSError: [Errno 98] address already "
        "in use); see "
    )
    assert "set PREFECT_API_URL" in str(err.value)


def test_a_run_whose_end_never_reached_the_server_is_settled_by_the_next(paths: Paths) -> None:
    """The server was down when a run finished: its record says Released, Prefect still
    says Running. The next run sets Prefect's state to the recorded end."""
    import types
    import uuid

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.run_hooks import holding_run
    from tasks.core.io import write_json

    url = local_server.ensure(
        paths, section("flow.server", port=local_server.free_port()), lambda _: None
    )
    call = local_server.call
    with httpx.Client(base_url=url, timeout=30) as client:
        flow_id = call(client, "POST", "/flows/", json={"name": "plumber"}).json()["id"]
        running = {"type": "RUNNING", "name": "Running"}
        run = call(client, "POST", "/flow_runs/", json={"flow_id": flow_id, "state": running})
        run_id = run.json()["id"]
    write_json(paths.var / "last_run.json", {
        "id": run_id, "name": "humble-hornet", "state": "COMPLETED", "shown_as": "Released",
        "message": "candidate version 1 released", "started": "2026-12-07T06:00:00+00:00",
        "finished": "2026-12-07T06:09:00+00:00", "decision": "released", "retrain": True,
    })  # fmt: skip
    nxt = types.SimpleNamespace(id=uuid.uuid4(), name="next-run")
    with temporary_settings({PREFECT_API_URL: url}), holding_run(paths, nxt) as crashed:
        assert crashed is None  # it ended; it did not crash
    with httpx.Client(base_url=url, timeout=30) as client:
        settled = call(client, "GET", f"/flow_runs/{run_id}").json()
    assert (settled["state_type"], settled["state_name"]) == ("COMPLETED", "Released")
    assert settled["state"]["message"] == "candidate version 1 released"
