"""What the loopback stack needs besides running processes: its PostgreSQL databases, its
bucket, its work pool and the profile that points commands at it (devstack/control.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from flows.local_server import ServerError
from tasks.core.secrets import mask_urls

PG_ADMIN_ENV = "PLUMBER_STACK_PG"
PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
POOL = "plumber"
# moto accepts any key; these name the loopback store and are not secrets.
LOOPBACK_KEYS = {
    "AWS_ACCESS_KEY_ID": "plumber-loopback",
    "AWS_SECRET_ACCESS_KEY": "loopback",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class StackError(ServerError):
    """The stack could not be started, reached or stopped."""


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


def create_databases(admin: str, names: Iterable[str]) -> None:
    """CREATE DATABASE for each name that is missing (databases of the stack's own)."""
    import psycopg

    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for db in names:
                if db not in have:
                    conn.execute(f'CREATE DATABASE "{db}"')
    except psycopg.Error as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StackError(
            f"PostgreSQL at {mask_urls(admin)} ({PG_ADMIN_ENV}): {first_line}; the stack "
            "keeps MLflow's and Prefect's state there"
        ) from None


def drop_databases(admin: str, names: Iterable[str]) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        for db in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def ensure_bucket(store: str, name: str) -> None:
    """The stack's bucket, made if the object store (in memory) does not hold it."""
    import httpx

    with httpx.Client(base_url=store, timeout=60) as client:
        if not client.head(f"/{bucket(name)}").is_success:
            client.put(f"/{bucket(name)}").raise_for_status()


def ensure_pool(api: str) -> None:
    """The process work pool `plumber` (Prefect's default job template for its type)."""
    import httpx

    if httpx.get(f"{api}/work_pools/{POOL}", timeout=30).status_code == 200:
        return
    prefect = str(Path(sys.executable).parent / "prefect")
    done = subprocess.run([prefect, "work-pool", "create", POOL, "--type", "process"],
                          env={**os.environ, "PREFECT_API_URL": api}, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        said = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        last = said[-1] if said else f"exit {done.returncode}"
        raise StackError(f"could not create the work pool {POOL!r}: {last}")


def write_profile(target: Path, name: str, urls: dict[str, str], admin: str) -> None:
    """The profile (stack.env): what a command or a worker needs to use this stack
    (readable by its owner only: it may carry the database password of PLUMBER_STACK_PG)."""
    values = {
        "MLFLOW_TRACKING_URI": urls["mlflow"],
        "PREFECT_API_URL": urls["prefect"] + "/api",
        "PLUMBER_DVC_REMOTE": f"s3://{bucket(name)}/dvc",
        "PLUMBER_LOCKS_URL": pg_url(admin, databases(name)["coord"]),
        "PLUMBER_WORK_POOL": POOL,
        "AWS_ENDPOINT_URL": urls["object-store"],
        **LOOPBACK_KEYS,
    }
    lines = [
        f"# the loopback stack {name!r}, written by `make stack-up`",
        f"# use it: export PLUMBER_STACK={target}",
        *(f"{key}={value}" for key, value in values.items()),
    ]
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)
    tmp.replace(target)
