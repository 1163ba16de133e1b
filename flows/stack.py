"""`plumber stack up|down|status`: the production stack, on this machine's loopback.

    object store   moto's S3-compatible server, in memory: a store for development, which
                   `down` empties (production points at S3, MinIO or GCS: docs/deployment.md)
    MLflow         tracking server, backend store in PostgreSQL (<name>_mlflow), artifacts
                   in the object store (s3://<name>/mlflow; _ becomes -), served through the server
    Prefect        API server and UI on PostgreSQL (<name>_prefect), a process work pool
    DVC remote     s3://<name>/dvc in the object store
    locks          PostgreSQL advisory locks in <name>_coord (tasks/core/shared_locks.py)

It uses the machine's PostgreSQL (PLUMBER_STACK_PG, default postgresql://postgres@127.0.0.1:
5432/postgres) with databases of its own. State sits under var/stack/: state.json (each
service's pid, port, URL, log), the logs, and stack.env, the profile a command or a worker
points at with PLUMBER_STACK (tasks/core/stack.py). Each service leads its own process
group, so `down` stops it with everything it started; `down --purge` also drops the
databases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.local_server import HOST, ServerError, free_port, wait_answering
from tasks.core import clock, processes
from tasks.core.io import write_json
from tasks.core.paths import Paths
from tasks.core.secrets import mask_urls
from tasks.core.stack import release_dvc_remote

PG_ADMIN_ENV = "PLUMBER_STACK_PG"
PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_NAME = "plumber"
POOL = "plumber"
# moto accepts any key; these name the loopback store and are not secrets.
LOOPBACK_KEYS = {
    "AWS_ACCESS_KEY_ID": "plumber-loopback",
    "AWS_SECRET_ACCESS_KEY": "loopback",
    "AWS_DEFAULT_REGION": "us-east-1",
}
PORTS = {"object-store": 9100, "mlflow": 5100, "prefect": 4300}
HEALTH = {"object-store": "/moto-api/", "mlflow": "/health", "prefect": "/api/health"}
Say = Callable[[str], None]
# The services outlive the command that starts them (their own sessions): their Popen
# objects are kept here so they are never collected, and warned about, while running.
_started: list[subprocess.Popen[bytes]] = []


class StackError(ServerError):
    """The stack could not be started, reached or stopped."""


def home(paths: Paths) -> Path:
    return paths.var / "stack"


def profile_file(paths: Paths) -> Path:
    return home(paths) / "stack.env"


def read_state(paths: Paths) -> dict[str, Any]:
    try:
        state = json.loads((home(paths) / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def bucket(name: str) -> str:
    """The stack's bucket: its name as S3 allows (no underscores)."""
    return name.replace("_", "-")


def databases(name: str) -> dict[str, str]:
    return {"mlflow": f"{name}_mlflow", "prefect": f"{name}_prefect", "coord": f"{name}_coord"}


def pg_url(admin: str, database: str, driver: str = "") -> str:
    """`admin` with another database (and a SQLAlchemy driver, e.g. 'psycopg')."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin)
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return urlunsplit(parts._replace(scheme=scheme, path=f"/{database}"))


def admin_url() -> str:
    return os.environ.get(PG_ADMIN_ENV) or PG_ADMIN_DEFAULT


# --- up -----------------------------------------------------------------------------------


def up(paths: Paths, name: str, start_timeout: float, say: Say) -> dict[str, Any]:
    """Start what is not running (a service that answers is kept), then write the profile."""
    from tasks.core.locks import exclusive

    if not name.isidentifier() or name != name.lower():
        raise StackError(f"stack name {name!r}: use lower-case letters, digits and _")
    folder = home(paths)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(
        folder / "up.lock",
        timeout=start_timeout,
        what="`plumber stack up`",
        setting="flow.server.start_timeout_seconds",
        say=say,
    ):
        state = read_state(paths)
        if state.get("name", name) != name:
            raise StackError(
                f"var/stack holds the stack {state['name']!r}; `plumber stack down` it first"
            )
        state = {
            "name": name,
            "started": state.get("started") or clock.stamp(),
            "services": state.get("services", {}),
        }
        admin = admin_url()
        create_databases(admin, databases(name).values())
        for service in PORTS:
            state["services"][service] = ensure(paths, state, service, admin, start_timeout, say)
            write_json(folder / "state.json", state)
        ensure_bucket(state)
        ensure_pool(state)
        write_profile(paths, state, admin)
    return state


def create_databases(admin: str, names: Any) -> None:
    """CREATE DATABASE for each name that is missing (databases of the stack's own)."""
    import psycopg

    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for db in names:
                if db not in have:
                    conn.execute(f'CREATE DATABASE "{db}"')
    except psycopg.Error as exc:
        raise StackError(
            f"PostgreSQL at {mask_urls(admin)} ({PG_ADMIN_ENV}): {first_line(exc)}; the stack "
            "keeps MLflow's and Prefect's state there"
        ) from None


def ensure(
    paths: Paths, state: dict[str, Any], service: str, admin: str, limit: float, say: Say
) -> dict[str, Any]:
    """The service's record: kept when its process lives and answers, else started."""
    known = state["services"].get(service)
    if known and processes.alive(known.get("pid")) and answers(known["url"] + HEALTH[service]):
        return dict(known)
    if known:
        stop_service(known)
    wanted = int((known or {}).get("port") or PORTS[service])  # the same port again if free
    port = wanted if port_available(wanted) else free_port()
    url = f"http://{HOST}:{port}"
    argv, env = command(paths, state, service, port, admin)
    log = home(paths) / f"{service}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=home(paths),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _started.append(proc)
    record = {"pid": proc.pid, "port": port, "url": url, "log": str(log), "started": clock.stamp()}
    say(f"starting {service} on {url} (log {log})")
    wait_answering(
        service, proc.pid, lambda: answers(url + HEALTH[service]), limit, say, log,
        hint="`plumber stack status` shows the rest; `plumber stack down` stops it",
    )  # fmt: skip
    return record


def command(
    paths: Paths, state: dict[str, Any], service: str, port: int, admin: str
) -> tuple[list[str], dict[str, str]]:
    """How each service is started: its command line and environment (no password on the
    command line, where `ps` shows it: database URLs go in the environment)."""
    bin_dir = Path(sys.executable).parent
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    base.pop("PLUMBER_STACK", None)
    name = state["name"]
    dbs = databases(name)
    if service == "object-store":
        return [str(bin_dir / "moto_server"), "-H", HOST, "-p", str(port)], base
    if service == "mlflow":
        env = {
            **base,
            **LOOPBACK_KEYS,
            "MLFLOW_BACKEND_STORE_URI": pg_url(admin, dbs["mlflow"], "psycopg"),
            "MLFLOW_S3_ENDPOINT_URL": state["services"]["object-store"]["url"],
        }
        return [
            str(bin_dir / "mlflow"),
            "server",
            "--app-name",  # its UI opens in the model-training layout (flows/mlflow_ui.py)
            "plumber",
            "--host",
            HOST,
            "--port",
            str(port),
            "--artifacts-destination",
            f"s3://{bucket(name)}/mlflow",
            "--workers",
            "1",
        ], env
    env = {
        **base,
        "PREFECT_HOME": str(home(paths) / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": pg_url(admin, dbs["prefect"], "asyncpg"),
    }
    return [
        str(bin_dir / "prefect"),
        "server",
        "start",
        "--host",
        HOST,
        "--port",
        str(port),
        "--analytics-off",
    ], env


def answers(url: str, timeout: float = 5.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def ensure_bucket(state: dict[str, Any]) -> None:
    """The stack's bucket, made if the object store (in memory) does not hold it."""
    import httpx

    store = state["services"]["object-store"]["url"]
    with httpx.Client(base_url=store, timeout=60) as client:
        if not client.head(f"/{bucket(state['name'])}").is_success:
            client.put(f"/{bucket(state['name'])}").raise_for_status()


def port_available(port: int) -> bool:
    """Whether a server could listen on `port` now (one just stopped leaves it in
    TIME_WAIT: servers bind with SO_REUSEADDR, and so does this check)."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def ensure_pool(state: dict[str, Any]) -> None:
    """The process work pool `plumber` (Prefect's default job template for its type)."""
    import httpx

    api = state["services"]["prefect"]["url"] + "/api"
    if httpx.get(f"{api}/work_pools/{POOL}", timeout=30).status_code == 200:
        return
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "prefect"),
            "work-pool",
            "create",
            POOL,
            "--type",
            "process",
        ],
        env={**os.environ, "PREFECT_API_URL": api},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise StackError(f"could not create the work pool {POOL!r}: {last_words(done)}")


def write_profile(paths: Paths, state: dict[str, Any], admin: str) -> Path:
    """var/stack/stack.env: what a command or a worker needs to use this stack (readable by
    its owner only: it may carry the database password of PLUMBER_STACK_PG)."""
    services, name = state["services"], state["name"]
    values = {
        "MLFLOW_TRACKING_URI": services["mlflow"]["url"],
        "PREFECT_API_URL": services["prefect"]["url"] + "/api",
        "PLUMBER_DVC_REMOTE": f"s3://{bucket(name)}/dvc",
        "PLUMBER_LOCKS_URL": pg_url(admin, databases(name)["coord"]),
        "PLUMBER_WORK_POOL": POOL,
        "AWS_ENDPOINT_URL": services["object-store"]["url"],
        **LOOPBACK_KEYS,
    }
    target = profile_file(paths)
    lines = [
        f"# the loopback stack {name!r}, written by `plumber stack up` at {clock.stamp()}",
        f"# use it: export PLUMBER_STACK={target}",
    ]
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in values.items())]) + "\n")
    tmp.chmod(0o600)
    tmp.replace(target)
    return target


# --- down and status ---------------------------------------------------------------------


def down(paths: Paths, purge: bool, say: Say) -> list[str]:
    """Stop every service the stack started (newest first); with `purge`, also drop its
    databases and its object store's state. Returns the services stopped."""
    state = read_state(paths)
    stopped = []
    services = state.get("services", {})
    for service in reversed([name for name in PORTS if name in services]):
        record = services[service]
        if stop_service(record):
            stopped.append(service)
            say(f"stopped {service} (pid {record['pid']})")
    if purge and state.get("name"):
        drop_databases(admin_url(), databases(state["name"]).values())
        say(f"dropped the databases of {state['name']!r} and removed {home(paths)}")
    if purge:
        shutil.rmtree(home(paths), ignore_errors=True)
    else:
        (home(paths) / "state.json").unlink(missing_ok=True)
    if release_dvc_remote(paths.root):
        say(f"the DVC remote of {paths.root} is its embedded default again (.dvc/config.local)")
    return stopped


def stop_service(record: dict[str, Any], grace: float = 30.0) -> bool:
    """The service's process group stopped (tasks/core/processes.py), and its process
    reaped when this one started it; False when it was not running."""
    pid = record.get("pid")
    if not isinstance(pid, int) or not processes.alive(pid):
        return False
    processes.stop_group(pid, grace)
    for proc in [p for p in _started if p.pid == pid]:
        proc.wait(30)
        _started.remove(proc)
    return True


def drop_databases(admin: str, names: Any) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        for db in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def status(paths: Paths) -> dict[str, Any]:
    """Each service: its URL, pid, whether it runs and answers; and the profile."""
    state = read_state(paths)
    services = {}
    for service, record in state.get("services", {}).items():
        alive = processes.alive(record.get("pid"))
        services[service] = {
            **record,
            "running": alive,
            "answering": alive and answers(record["url"] + HEALTH[service]),
        }
    profile = profile_file(paths)
    return {
        "name": state.get("name"),
        "services": services,
        "databases": databases(state["name"]) if state.get("name") else {},
        "postgres": mask_urls(admin_url()),
        "profile": str(profile) if profile.exists() else None,
    }


def format_status(data: dict[str, Any]) -> str:
    if not data["name"]:
        return "no stack under var/stack (`plumber stack up` starts one)"
    lines = [f"stack {data['name']!r} on this machine's loopback:"]
    for service, rec in data["services"].items():
        state = (
            "answering"
            if rec["answering"]
            else "running, not answering"
            if rec["running"]
            else "stopped"
        )
        lines.append(f"  {service:<13}{rec['url']:<24}{state} (pid {rec['pid']}, log {rec['log']})")
    dbs = ", ".join(data["databases"].values())
    lines.append(f"  postgresql   {data['postgres']} databases {dbs}")
    if data["profile"]:
        lines.append(f"use it: export PLUMBER_STACK={data['profile']}")
    return "\n".join(lines)


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def last_words(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {done.returncode}"
