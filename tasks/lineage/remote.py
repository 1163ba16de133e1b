"""The DVC remote a record points to: which one, pushing to it, and what it holds.

A record names its remote by name and URL (for a folder, the absolute path), never with
credentials: those stay in the environment or DVC's local config of each machine. A
machine reading the record uses its own configured remote of the same URL (with that
remote's options and credentials), else the URL alone.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core import dvc_internals
from tasks.core.errors import StepError
from tasks.core.retries import last_result
from tasks.core.secrets import without_credentials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remote:
    name: str
    url: str  # without credentials
    options: dict[str, Any]  # DVC's remote section (url included), as configured here

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url}


def configured(root: Path, name: str = "") -> Remote:
    """The remote `name` (empty: DVC's default, core.remote) of the project at `root`."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
        name = name or config["core"].get("remote", "")
        remotes = config["remote"]
        if not name or name not in remotes:
            known = ", ".join(remotes) or "none"
            raise StepError(
                f"no DVC remote {name!r} to record the data in (lineage.remote; configured: "
                f"{known}); add one: dvc remote add -d NAME URL"
            )
        options = dict(remotes[name])
    return Remote(name, without_credentials(str(options["url"])), options)


def for_record(root: Path, recorded: dict[str, str], override: str = "") -> Remote:
    """The remote to read a record's data from: `override` (a configured remote's name, or
    a URL), else the configured remote holding the recorded URL, else that URL alone."""
    from dvc.repo import Repo

    with Repo(str(root), uninitialized=True) as repo:
        remotes = {name: dict(conf) for name, conf in repo.config["remote"].items()}
    if override:
        if override in remotes:
            return Remote(
                override, without_credentials(remotes[override]["url"]), remotes[override]
            )
        return Remote("given", without_credentials(override), {"url": override})
    for name, conf in remotes.items():
        if without_credentials(str(conf["url"])).rstrip("/") == recorded["url"].rstrip("/"):
            return Remote(name, recorded["url"], conf)
    return Remote(recorded["name"], recorded["url"], {"url": recorded["url"]})


def odb(remote: Remote) -> Any:
    """DVC's object store of `remote` (files/md5 under its URL)."""
    from dvc.fs import get_cloud_fs
    from dvc_data.hashfile.db import get_odb

    cls, config, path = get_cloud_fs({"remote": {"r": remote.options}}, name="r")
    fs = cls(**config)
    return get_odb(fs, fs.join(path, "files", "md5"), hash_name="md5")


def declared_outs(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, path, options) of every output dvc.yaml (parsed) declares: outs, metrics, plots."""
    found = []
    for stage in (spec.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                path, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
                found.append((kind, str(path), dict(options or {})))
    return found


def uncached(spec: dict[str, Any]) -> set[str]:
    """The outputs dvc.yaml (parsed) marks `cache: false`: git's to keep, never pushed."""
    return {path for _, path, options in declared_outs(spec) if options.get("cache") is False}


def cached_outs(lock: dict[str, Any], spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(stage, path, md5) of every output dvc.lock records that DVC caches (and so pushes);
    `spec`: the dvc.yaml that says which outputs are not cached."""
    skip = uncached(spec)
    found = []
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs", []):
            if out["path"] not in skip and out.get("md5"):
                found.append((stage, str(out["path"]), str(out["md5"])))
    return found


def missing(remote: Remote, outs: Iterable[tuple[str, str, str]]) -> tuple[int, list[str]]:
    """How many objects the outputs use, and the outputs (or files in them) whose objects
    `remote` lacks, by path."""
    store = odb(remote)
    checked, gone = 0, []
    for _stage, path, md5 in outs:
        checked += 1
        if not store.exists(md5):
            gone.append(path)
            continue
        if md5.endswith(".dir"):
            with store.fs.open(store.oid_to_path(md5), "r") as fh:
                listing = json.load(fh)
            wanted = {item["md5"]: item["relpath"] for item in listing}
            present = set(store.oids_exist(list(wanted)))
            checked += len(wanted)
            gone += [f"{path}/{wanted[oid]}" for oid in sorted(set(wanted) - present)]
    return checked, gone


def push(root: Path, remote: Remote, attempts: int, delay: float, timeout: float) -> None:
    """`dvc push` of every output dvc.lock records to `remote`, retried `attempts` times
    with a doubling delay (a network or object store blips); then a StepError naming the
    remote and DVC's last line."""
    from tenacity import RetryCallState, Retrying, stop_after_attempt, wait_exponential

    from tasks.core.guard import run_guarded

    argv = [sys.executable, "-m", "dvc", "push", "--quiet", "-r", remote.name]

    def attempt() -> str:
        """ "" when pushed, else why not."""
        try:
            done = run_guarded(argv, timeout=timeout, cwd=root)
        except subprocess.TimeoutExpired:
            return f"no answer within {timeout:g} s"
        return (
            ""
            if done.returncode == 0
            else dvc_internals.reason(done.stderr + done.stdout, done.returncode)
        )

    def say(state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        log.warning("dvc push to %s failed (%s); attempt %d of %d in %g s", remote.url,
                    state.outcome.result(), state.attempt_number + 1, attempts,
                    state.next_action.sleep)  # fmt: skip

    def failed(state: RetryCallState) -> bool:
        return state.outcome is not None and bool(state.outcome.result())

    problem = Retrying(
        stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=delay),
        retry=failed, before_sleep=say, retry_error_callback=last_result,
    )(attempt)  # fmt: skip
    if problem:
        raise StepError(f"the data could not be pushed to the DVC remote {remote.name} "
                        f"({remote.url}{served_by(remote)}) in {attempts} attempt(s): "
                        f"{problem}")  # fmt: skip


def served_by(remote: Remote) -> str:
    """', the object store at URL' for a remote served by an S3-compatible store of its
    own address (MinIO, the stack's), which is what is down when a push cannot connect."""
    endpoint = remote.options.get("endpointurl")
    return f", the object store at {without_credentials(str(endpoint))}" if endpoint else ""
