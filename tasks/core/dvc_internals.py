"""Every part of DVC that Plumber uses beyond its command line and documented config, in
one file: an upgrade of DVC that changes one breaks this file and the test of that part
(tests/core/test_dvc_internals.py), not the flow.

- the stages in `dvc repro`'s order (dvc.repo.reproduce.plan_repro) and whether one would
  run (Stage.changed), read under the repository lock as DVC's commands read them;
- what of a stage's command and inputs differs from dvc.lock (Stage.changed_stage,
  Dependency.status);
- DVC's locks: the repository lock (.dvc/tmp/lock, zc.lockfile) and the per-output lock
  file (.dvc/tmp/rwlock, JSON), to wait for them and name their holder;
- the words of DVC's errors: its lock race and its "Having any troubles?" footer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The line DVC ends every failure with: an invitation, not the reason.
FOOTER = "Having any troubles?"
# What DVC says when another DVC process holds a lock it needs.
LOCK_RACE = ("Unable to acquire lock", "is being blocked by")


def repo_lock(root: Path) -> Path:
    return root / ".dvc" / "tmp" / "lock"


def rwlock(root: Path) -> Path:
    return root / ".dvc" / "tmp" / "rwlock"


def stage_order(root: Path) -> list[str]:
    """Every stage of dvc.yaml, dependencies first, as `dvc repro` would run them. Read
    under DVC's repository lock, as DVC's commands read it: never a half-written dvc.lock."""
    from dvc.repo.reproduce import get_active_graph, plan_repro

    with _opened(root) as repo:
        return [_address(root, stage) for stage in plan_repro(get_active_graph(repo.index.graph))]


def _address(root: Path, stage: Any) -> str:
    """How `dvc repro` run in `root` names the stage (DVC's own `addressing` is relative
    to the current directory, which need not be the project's)."""
    dvcfile = os.path.relpath(stage.dvcfile.path, root)
    return str(stage.name) if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


@contextmanager
def _opened(root: Path) -> Iterator[Any]:
    """The DVC repository at `root`, under its lock, as DVC's commands read it."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo, repo.lock:
        yield repo


def _collect(repo: Any, root: Path, name: str) -> Any:
    # An absolute target: DVC reads a bare stage name relative to the current directory.
    dvcfile, _, stage_name = name.rpartition(":")
    [stage] = repo.stage.collect(f"{root / (dvcfile or 'dvc.yaml')}:{stage_name}")
    return stage


def stage_changed(root: Path, name: str) -> bool:
    """Whether `dvc repro` would run the stage: always-changed, or a dependency, output,
    parameter or command differs from dvc.lock. Hashes come from DVC's state cache, so
    files that did not change are not read again."""
    with _opened(root) as repo:
        stage = _collect(repo, root, name)
        return bool(stage.always_changed or stage.changed())


def drift(root: Path, stages: list[str]) -> list[str]:
    """What of `stages` differs from dvc.lock in the working copy: code and params (and
    the command), but not data made by other stages."""
    found = []
    with _opened(root) as repo:
        made = {str(out.def_path) for stage in repo.index.stages for out in stage.outs}
        for name in stages:
            stage = _collect(repo, root, name)
            if stage.changed_stage():
                found.append(f"{name}: its command")
            for dep in stage.deps:
                status = {} if str(dep.def_path) in made else dep.status()
                for path, what in status.items():
                    keys = f" ({', '.join(what)})" if isinstance(what, dict) else ""
                    found.append(f"{name}: {path}{keys} changed")
    return found


def repo_lock_holder(root: Path) -> str | None:
    """The pid in DVC's repository lock while a DVC command holds it ("?" when it wrote
    none yet); None when it is free."""
    import zc.lockfile  # DVC's own lock library: not the kind tasks/core/locks.py takes

    lock_file = repo_lock(root)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        zc.lockfile.LockFile(str(lock_file)).close()
    except zc.lockfile.LockError:
        return (lock_file.read_text().strip() if lock_file.exists() else "") or "?"
    return None


@contextmanager
def holding_repo_lock(root: Path) -> Iterator[bool]:
    """Take DVC's repository lock if it is free: yields whether it was taken (and holds it
    for the block); a DVC command that wants it meanwhile retries for 3 s, or waits with
    --wait-for-lock."""
    import zc.lockfile

    try:
        held = zc.lockfile.LockFile(str(repo_lock(root)))
    except zc.lockfile.LockError:
        yield False
        return
    try:
        yield True
    finally:
        held.close()


def rwlock_holders(root: Path) -> list[tuple[int, str]]:
    """(pid, command) of the live processes in DVC's per-output lock file (DVC itself
    drops dead ones)."""
    from tasks.core.processes import started

    try:
        data = json.loads(rwlock(root).read_text())
    except (OSError, ValueError):
        return []
    infos = [*data.get("write", {}).values()]
    for readers in data.get("read", {}).values():
        infos += readers
    return sorted({(int(i["pid"]), str(i["cmd"])) for i in infos if started(int(i["pid"]))})


def lock_race(lines: list[str]) -> bool:
    """Whether DVC's output says another DVC process held a lock it needed."""
    return any(words in line for line in lines for words in LOCK_RACE)


def reason(output: str, code: int) -> str:
    """Why a DVC command failed, from its output: its last `ERROR:` line (DVC's footer and
    blank lines left out), else its last line."""
    lines = [line.strip() for line in output.splitlines()
             if line.strip() and not line.strip().startswith(FOOTER)]  # fmt: skip
    errors = [line for line in lines if line.startswith("ERROR:")]
    found = (errors or lines or [f"exit {code}"])[-1]
    return found.removeprefix("ERROR:").strip()
