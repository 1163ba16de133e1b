"""Which stack a command talks to: the embedded default, or shared servers named by a profile.

The embedded default needs nothing: MLflow on SQLite, a local Prefect server, the DVC remote
in DVC's config, file locks, all under this checkout's var/. A team's stack is named by
one profile file, pointed at with PLUMBER_STACK (`make stack-up` writes one for the
loopback stack, var/stack/stack.env):

    MLFLOW_TRACKING_URI=http://mlflow.internal:5000
    PREFECT_API_URL=http://prefect.internal:4200/api
    PLUMBER_DVC_REMOTE=s3://team-bucket/plumber/dvc
    PLUMBER_LOCKS_URL=postgresql://plumber@db.internal:5432/plumber
    AWS_ENDPOINT_URL=http://minio.internal:9000      (optional: MinIO, moto, GCS's XML API)

Each line is KEY=VALUE; a variable set in the environment wins over the file, so one key
can be changed for one command. Credentials may stay out of the file (AWS_ACCESS_KEY_ID,
PGPASSWORD or ~/.pgpass, ...). With a profile, every shared service must be named in it,
and nothing falls back to a store under var/: a missing key is an error naming it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import ConfigError

STACK_ENV = "PLUMBER_STACK"
TRACKING = "MLFLOW_TRACKING_URI"
ORCHESTRATION = "PREFECT_API_URL"
DATA_REMOTE = "PLUMBER_DVC_REMOTE"
LOCKS = "PLUMBER_LOCKS_URL"
OBJECT_STORE = "AWS_ENDPOINT_URL"
REQUIRED = (TRACKING, ORCHESTRATION, DATA_REMOTE, LOCKS)
# The name DVC knows the profile's remote by, in .dvc/config.local (never in git).
REMOTE_NAME = "stack"


@dataclass(frozen=True)
class Stack:
    """What a command talks to, in words fit for `plumber status` (no password)."""

    profile: str  # the profile file, or "" for the embedded default
    tracking: str
    orchestration: str
    data_remote: str
    locks: str

    @property
    def shared(self) -> bool:
        return bool(self.profile)


def profile_path(environ: MutableMapping[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    value = env.get(STACK_ENV, "").strip()
    return Path(value).expanduser() if value else None


def read_profile(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped; values may be quoted."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"{STACK_ENV} names {path}, which cannot be read ({exc.strerror or exc}); start the "
            "loopback stack with `make stack-up`, or write a profile (docs/deployment.md, "
            "'Running on shared infrastructure')"
        ) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {line[:60]!r}")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def load_profile(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Put the profile named by PLUMBER_STACK into the environment (variables already set
    win), so every library and child process sees the same stack. Returns its path, or
    None for the embedded default. A profile that lacks a shared service is an error."""
    env = os.environ if environ is None else environ
    path = profile_path(env)
    if path is None:
        return None
    for key, value in read_profile(path).items():
        env.setdefault(key, value)
    missing = [key for key in REQUIRED if not env.get(key)]
    if missing:
        raise ConfigError(
            f"the stack profile {path} ({STACK_ENV}) does not name {', '.join(missing)}: "
            "with a profile nothing falls back to the local stores under var/"
        )
    return path.resolve()


def require_shared(key: str, what: str) -> None:
    """Raise ConfigError when a profile is in use but `key` is unset: the caller is about
    to fall back to a local store, which no other machine would see."""
    if profile_path() is not None and not os.environ.get(key):
        raise ConfigError(
            f"{STACK_ENV} is set but {key} is not: {what} would go to a local store under var/ "
            "that no other machine sees; load the profile (`plumber` commands do) or set "
            f"{key}"
        )


def current(local_tracking: str, local_remote: str) -> Stack:
    """The stack this process talks to, described (passwords masked)."""
    from tasks.core.secrets import mask_urls

    path = profile_path()
    env = os.environ
    orchestration = env.get(ORCHESTRATION) or "the local Prefect server (plumber server status)"
    remote = env.get(DATA_REMOTE) or local_remote
    if env.get(DATA_REMOTE) and env.get(OBJECT_STORE):
        remote = f"{remote} at {env[OBJECT_STORE]}"
    return Stack(
        profile=str(path.resolve()) if path else "",
        tracking=mask_urls(env.get(TRACKING) or local_tracking),
        orchestration=mask_urls(orchestration),
        data_remote=mask_urls(remote),
        locks=mask_urls(env.get(LOCKS) or "file locks under var/ (this machine only)"),
    )


def configure_dvc_remote(root: Path) -> None:
    """Make the profile's data remote DVC's default for this checkout, in .dvc/config.local
    (git-ignored: an object store's URL and endpoint are deployment settings, and
    credentials come from the environment, never from a file in git)."""
    url = os.environ.get(DATA_REMOTE)
    if not url or not (root / ".dvc").is_dir():
        return
    from dvc.config import Config

    wanted = {"url": url}
    config = Config(dvc_dir=str(root / ".dvc"), validate=False)
    local = config.load_one("local")
    if local.get("remote", {}).get(REMOTE_NAME) == wanted and (
        local.get("core", {}).get("remote") == REMOTE_NAME
    ):
        return
    with config.edit("local", validate=False) as conf:
        conf.setdefault("remote", {})[REMOTE_NAME] = wanted
        conf.setdefault("core", {})["remote"] = REMOTE_NAME


def release_dvc_remote(root: Path) -> bool:
    """Undo `configure_dvc_remote` (the stack is down): the checkout's DVC remote is the
    embedded default again, not an object store nobody serves. True if it was set."""
    if not (root / ".dvc").is_dir():
        return False
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"), validate=False)
    local = config.load_one("local")
    if REMOTE_NAME not in local.get("remote", {}):
        return False
    with config.edit("local", validate=False) as conf:
        conf["remote"].pop(REMOTE_NAME, None)
        if conf.get("core", {}).get("remote") == REMOTE_NAME:
            del conf["core"]["remote"]
    return True
