"""The local Prefect server: started once under var/, reused by every run, stopped when asked.

Without `PREFECT_API_URL`, Prefect starts a temporary API server for every flow run: about
10 s of a run with nothing to do, and under load it failed to answer within Prefect's 20 s
start-up limit. Prefect recommends a long-lived server instead, and this is one:

    var/prefect-server/server.json   its pid, port, URL and start time
    var/prefect-server/server.log    the server's own output
    var/prefect-server/prefect.db    its database (flow runs, logs, artifacts)

`plumber run` and `plumber serve` call `ensure()`: a server that answers is reused; none
is started, and its start is waited for as long as its process lives (up to
`flow.server.start_timeout_seconds`, a bound for a wedged start, not a timer a busy machine
trips over). It stays until `plumber server stop`, as `prefect server start --background`
does.

The server is Prefect's own `prefect server start`, launched here rather than with its
`--background` flag because that flag hands the server two pipes that nobody reads once
the command exits (its log is lost, and tests/server_logs.py reads that log for the
scheduler's errors) and leaves it in the caller's process group, so a Ctrl-C of the run
that started it stopped it too. Launched here it leads a session of its own and writes
server.log.

History stays bounded: after each run the flow runs beyond the newest `keep_runs` are
deleted, and Prefect's own vacuum service removes their logs and artifacts and runs older
than `retention_days`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core import clock, processes
from tasks.core.config import ServerParams
from tasks.core.errors import StepError
from tasks.core.io import write_json
from tasks.core.paths import Paths

HOST = "127.0.0.1"
STATE = "server.json"
# The server outlives the command that starts it (its own session): its Popen object is
# kept here so it is never collected, and warned about, while running.
_started: list[subprocess.Popen[bytes]] = []


class ServerError(StepError):
    """The local Prefect server could not be started or reached."""


def folder(paths: Paths) -> Path:
    return paths.prefect_server


def read_state(paths: Paths) -> dict[str, Any] | None:
    try:
        state = json.loads((folder(paths) / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and processes.alive(state.get("pid")) else None


def ensure(paths: Paths, cfg: ServerParams, say: Callable[[str], None]) -> str:
    """The API URL of a running local server, started if there is none."""
    from tasks.core.locks import exclusive

    home = folder(paths)
    # Two commands starting at once: one starts the server, the other waits and reuses it.
    with exclusive(
        home / "start.lock", timeout=cfg.start_timeout_seconds,
        what="a command starting the local Prefect server",
        setting="flow.server.start_timeout_seconds", say=say,
    ):  # fmt: skip
        state = read_state(paths)
        if state is None:
            state = _launch(paths, cfg)
            say(
                f"starting the local Prefect server on {state['url']} (state in {home}; "
                f"`plumber server stop` stops it)"
            )
        wait_ready(state, cfg.start_timeout_seconds, say, home / "server.log")
    return api_url(state)


def api_url(state: dict[str, Any]) -> str:
    return f"{state['url']}/api"


def _launch(paths: Paths, cfg: ServerParams) -> dict[str, Any]:
    home = folder(paths)
    port = cfg.port if port_free(cfg.port) else free_port()
    command = [str(Path(sys.executable).parent / "prefect"), "server", "start",
               "--host", HOST, "--port", str(port), "--analytics-off"]  # fmt: skip
    with (home / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            command, cwd=paths.root, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, env=server_env(home, cfg, port), start_new_session=True,
        )  # fmt: skip
    _started.append(proc)
    url = f"http://{HOST}:{port}"
    state = {"pid": proc.pid, "port": port, "url": url, "started": clock.stamp()}
    write_json(home / STATE, state)
    return state


def server_env(home: Path, cfg: ServerParams, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    retention = str(int(cfg.retention_days * 86400))
    return {
        **env,
        "PREFECT_HOME": str(home),
        # The UI asks its settings (GET /ui-settings) which API to call, and Prefect derives
        # that from these, not from `--port`: on another port than 4200 the UI would show
        # whatever server answers on 4200.
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": f"http://{HOST}:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        # Prefect's own vacuum: flow runs older than the retention, then their logs and
        # artifacts, and logs left by runs deleted for keep_runs; checked every 10 minutes.
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs,orphans",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": retention,
        "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": "600",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ORPHAN_CLEANUP_LOOP_SECONDS": "600",
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": f"P{max(1, int(cfg.retention_days))}D",
    }


def wait_ready(state: dict[str, Any], limit: float, say: Callable[[str], None], log: Path) -> None:
    """Return once the server answers (see `wait_answering`)."""
    wait_answering(
        "the local Prefect server", lambda: processes.alive(state["pid"]),
        lambda: healthy(state["url"]), limit, say, log,
        hint="try `plumber server start`, or set PREFECT_API_URL to a Prefect server",
    )  # fmt: skip


def wait_answering(
    what: str,
    running: Callable[[], bool],
    answering: Callable[[], bool],
    limit: float,
    say: Callable[[str], None],
    log: Path,
    hint: str,
) -> None:
    """Return once a server answers. Waits while it is `running`: a slow start on a busy
    machine is waited for (up to `limit`, a bound for a wedged start); a dead one fails at
    once, naming its log."""
    started = time.monotonic()
    next_note = 15.0
    while not answering():
        waited = time.monotonic() - started
        if not running():
            raise ServerError(f"{what} exited while starting ({last_line(log)}); see {log}; {hint}")
        if waited > limit:
            raise ServerError(
                f"{what} did not answer within {limit:g} s (a bound for a wedged start); "
                f"see {log}; {hint}"
            )
        if waited >= next_note:
            say(f"still waiting for {what} to answer ({waited:.0f} s)")
            next_note *= 2
        time.sleep(0.25)


def healthy(url: str, timeout: float = 5.0) -> bool:
    """Whether the Prefect server at `url` answers its health check."""
    return answers(f"{url}/api/health", timeout)


def answers(address: str, timeout: float = 5.0) -> bool:
    """Whether GET `address` answers 200."""
    import urllib.request

    try:
        with urllib.request.urlopen(address, timeout=timeout) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def stop(paths: Paths, grace: float = 30.0) -> bool:
    """Stop the local server (and all it started); False when none was running."""
    state = read_state(paths)
    if state is not None:
        processes.stop_group(int(state["pid"]), grace)  # it leads its own group
    (folder(paths) / STATE).unlink(missing_ok=True)
    return state is not None


def prune_history(url: str, keep: int) -> int:
    """Delete the flow runs beyond the newest `keep`; returns how many went."""
    import httpx

    with httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(retries=2)) as client:
        query = {"sort": "EXPECTED_START_TIME_DESC", "offset": keep, "limit": 200}
        old = [run["id"] for run in call(client, "POST", "/flow_runs/filter", json=query).json()]
        for run_id in old:
            call(client, "DELETE", f"/flow_runs/{run_id}")
    return len(old)


def call(client: Any, method: str, path: str, **kwargs: Any) -> Any:
    """An API call, retried while the server answers 503 (SQLite busy: Prefect's own
    client retries these too), waiting 0.5, 1, 2... s; then its error."""
    from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential

    from tasks.core.retries import last_result

    answer = Retrying(
        stop=stop_after_attempt(6), wait=wait_exponential(multiplier=0.5),
        retry=retry_if_result(lambda answer: answer.status_code == 503),
        retry_error_callback=last_result,
    )(lambda: client.request(method, path, **kwargs))  # fmt: skip
    answer.raise_for_status()
    return answer


def port_free(port: int) -> bool:
    """Whether a server could listen on `port` now (one just stopped leaves it in
    TIME_WAIT: servers bind with SO_REUSEADDR, and so does this check)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][-200:] if lines else "no output"
