"""The loopback stack, for development: `make stack-up`, `make stack-down`, `make stack-status`.

    object store   moto's S3-compatible server, in memory: a store for development, which
                   `down` empties (production points at S3, MinIO or GCS: docs/deployment.md)
    MLflow         tracking server, backend store in PostgreSQL (<name>_mlflow), artifacts
                   in the object store (s3://<name>/mlflow; _ becomes -), served through the server
    Prefect        API server and UI on PostgreSQL (<name>_prefect), a process work pool
    DVC remote     s3://<name>/dvc in the object store
    locks          PostgreSQL advisory locks in <name>_coord (tasks/core/shared_locks.py)

supervisord runs the three servers (devstack/supervisord.conf): it starts them, keeps their
logs, stops each with everything it started and reports their states. This file does what
a process manager does not: the databases, the bucket, the work pool, and the profile
(var/stack/stack.env) that commands and workers point at with PLUMBER_STACK. Plumber itself
only reads profiles; it never starts these servers.

It uses the machine's PostgreSQL (PLUMBER_STACK_PG, default postgresql://postgres@127.0.0.1:
5432/postgres) with databases of its own; `down --purge` drops them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from devstack import provision
from devstack.provision import StackError
from flows.local_server import answers, free_port, port_free
from flows.local_server import wait_answering as wait_answering_for
from tasks.core.io import write_json
from tasks.core.processes import alive
from tasks.core.profile import release_dvc_remote
from tasks.core.secrets import mask_urls

HOST = "127.0.0.1"
CONFIG = Path(__file__).with_name("supervisord.conf")
# Each service: its default port, the variable supervisord.conf reads it from, its health URL.
SERVICES = {
    "object-store": (9100, "STORE_PORT", "/moto-api/"),
    "mlflow": (5100, "MLFLOW_PORT", "/health"),
    "prefect": (4300, "PREFECT_PORT", "/api/health"),
}
STOPPED = {"STOPPED", "EXITED", "FATAL"}
Say = Callable[[str], None]


def home(root: Path) -> Path:
    return root / "var" / "stack"


def profile_file(root: Path) -> Path:
    return home(root) / "stack.env"


def read_state(root: Path) -> dict[str, Any]:
    """var/stack/state.json: the stack's name and the ports its services were given."""
    try:
        state = json.loads((home(root) / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def url(state: dict[str, Any], service: str) -> str:
    return f"http://{HOST}:{state['ports'][service]}"


# --- supervisord ---------------------------------------------------------------------------


def socket_path(root: Path) -> Path:
    """supervisord's control socket: under the temp folder, since a socket's path may not
    exceed 107 bytes and a checkout's may be deep."""
    digest = hashlib.sha1(str(home(root).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"plumber-stack-{digest}.sock"


def supervisor(root: Path, method: str, *args: Any) -> Any:
    """One call of supervisord's XML-RPC interface (supervisor.METHOD), over its socket."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{socket_path(root)}")
    with xmlrpc.client.ServerProxy(f"http://{HOST}", transport=transport) as proxy:
        return getattr(proxy.supervisor, method)(*args)


def processes(root: Path) -> dict[str, dict[str, Any]] | None:
    """Each service's state as supervisord reports it; None when supervisord is not running."""
    try:
        return {info["name"]: info for info in supervisor(root, "getAllProcessInfo")}
    except (OSError, xmlrpc.client.Error):
        return None


def start_supervisord(root: Path, state: dict[str, Any], admin: str) -> None:
    name = state["name"]
    dbs = provision.databases(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.pop("PLUMBER_STACK", None)
    env.update(
        provision.LOOPBACK_KEYS,
        STACK_HOME=str(home(root)), STACK_NAME=name, STACK_BUCKET=provision.bucket(name),
        STACK_SOCKET=str(socket_path(root)), STACK_BIN=str(Path(sys.executable).parent),
        MLFLOW_BACKEND_STORE_URI=provision.pg_url(admin, dbs["mlflow"], "psycopg"),
        PREFECT_API_DATABASE_CONNECTION_URL=provision.pg_url(admin, dbs["prefect"], "asyncpg"),
        **{var: str(state["ports"][service]) for service, (_, var, _) in SERVICES.items()},
    )  # fmt: skip
    supervisord = Path(sys.executable).parent / "supervisord"
    done = subprocess.run([str(supervisord), "-c", str(CONFIG)], env=env, capture_output=True,
                          text=True, cwd=home(root))  # fmt: skip
    if done.returncode != 0:
        raise StackError(f"supervisord did not start: {(done.stderr or done.stdout).strip()}")


def wait_answering(root: Path, state: dict[str, Any], limit: float, say: Say) -> None:
    """Return once every service answers; one supervisord gave up on fails at once."""
    for service in SERVICES:
        wait_answering_for(
            service, partial(running, root, service), partial(answering, state, service),
            limit, say, home(root) / f"{service}.log", hint="`make stack-status` shows the rest",
        )  # fmt: skip


def running(root: Path, service: str) -> bool:
    """Whether supervisord runs `service`, or is starting it."""
    info = (processes(root) or {}).get(service, {"statename": "STOPPED"})
    return info["statename"] not in STOPPED


def answering(state: dict[str, Any], service: str) -> bool:
    return answers(url(state, service) + SERVICES[service][2])


# --- up ------------------------------------------------------------------------------------


def up(root: Path, name: str, limit: float, say: Say) -> dict[str, Any]:
    """Start what is not running (what runs is kept), then write the profile."""
    from tasks.core.locks import exclusive

    if not name.isidentifier() or name != name.lower():
        raise StackError(f"stack name {name!r}: use lower-case letters, digits and _")
    home(root).mkdir(parents=True, exist_ok=True)
    with exclusive(home(root) / "up.lock", timeout=limit, what="`make stack-up`",
                   setting="--timeout", say=say):  # fmt: skip
        state = read_state(root)
        if state.get("name", name) != name:
            raise StackError(
                f"var/stack holds the stack {state['name']!r}; `make stack-down` it first"
            )
        admin = provision.admin_url()
        running = processes(root)
        if running is None:
            state = {"name": name, "ports": choose_ports(state.get("ports", {}))}
            provision.create_databases(admin, provision.databases(name).values())
            write_json(home(root) / "state.json", state)
            say(f"starting the stack {name!r} under supervisord (logs in {home(root)})")
            start_supervisord(root, state, admin)
        else:
            for service, info in running.items():
                if info["statename"] in STOPPED:
                    say(f"starting {service} again")
                    supervisor(root, "startProcess", service, True)
        wait_answering(root, state, limit, say)
        provision.ensure_bucket(url(state, "object-store"), name)
        provision.ensure_pool(url(state, "prefect") + "/api")
        urls = {service: url(state, service) for service in SERVICES}
        provision.write_profile(profile_file(root), name, urls, admin)
    return state


def choose_ports(before: dict[str, int]) -> dict[str, int]:
    """Each service's port: the one it had, else its default, else any free one."""
    chosen = {}
    for service, (default, _, _) in SERVICES.items():
        wanted = int(before.get(service) or default)
        chosen[service] = wanted if port_free(wanted) else free_port()
    return chosen


# --- down and status -----------------------------------------------------------------------


def stop_service(root: Path, service: str) -> bool:
    """Stop one service (its process group), as a crash would leave it; False if it was not
    running."""
    info = (processes(root) or {}).get(service)
    if not info or info["statename"] in STOPPED:
        return False
    supervisor(root, "stopProcess", service, True)
    return True


def down(root: Path, purge: bool, say: Say, limit: float = 120) -> list[str]:
    """Stop every service and supervisord; with `purge`, also drop the stack's databases
    and its folder. Returns the services that were running."""
    state = read_state(root)
    running = processes(root)
    stopped = [name for name, info in (running or {}).items() if info["statename"] not in STOPPED]
    if running is not None:
        pid = supervisor(root, "getPID")
        supervisor(root, "shutdown")
        deadline = time.monotonic() + limit
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        say(f"stopped {', '.join(stopped) or 'supervisord'}")
    if purge and state.get("name"):
        provision.drop_databases(provision.admin_url(), provision.databases(state["name"]).values())
        say(f"dropped the databases of {state['name']!r} and removed {home(root)}")
    if purge:
        shutil.rmtree(home(root), ignore_errors=True)
    if release_dvc_remote(root):
        say(f"the DVC remote of {root} is its embedded default again (.dvc/config.local)")
    return stopped


def status(root: Path) -> dict[str, Any]:
    """Each service: its URL, pid, supervisord's state for it, whether it answers."""
    state = read_state(root)
    running = processes(root) or {}
    services = {}
    for service, (_, _, health) in SERVICES.items():
        if not state.get("ports"):
            break
        info = running.get(service, {"statename": "STOPPED", "pid": 0})
        address = url(state, service)
        services[service] = {
            "url": address, "pid": info["pid"], "state": info["statename"],
            "answering": info["statename"] not in STOPPED and answers(address + health),
            "log": str(home(root) / f"{service}.log"),
        }  # fmt: skip
    profile = profile_file(root)
    return {
        "name": state.get("name"),
        "services": services,
        "databases": provision.databases(state["name"]) if state.get("name") else {},
        "postgres": mask_urls(provision.admin_url()),
        "profile": str(profile) if profile.exists() else None,
    }
