"""Data at rest checked against its record: raw partitions against the manifest's SHA-256,
DVC cache objects against the MD5 that names them.

A byte flipped on disk, a deleted partition or a truncated copy is found before it is
used or pushed, named, and repaired where a good copy exists:

- a raw partition that is missing or altered is restored from the DVC cache (the object
  dvc.lock records for it, checked against the manifest first), else collect re-reads it
  from its source (tasks/collect.py), else the run fails naming it;
- a corrupt cache object (whose content no longer hashes to its name) is rewritten from
  the workspace copy when that copy is intact; else the push stops, naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.io import atomic_path, read_json, sha256_file, write_json
from tasks.core.paths import Paths

log = logging.getLogger(__name__)

MISSING, ALTERED = "missing", "altered"


@dataclass(frozen=True)
class Damage:
    path: Path
    kind: str  # MISSING or ALTERED
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path} is {self.kind}{f' ({self.detail})' if self.detail else ''}"


# --- raw partitions against the manifest -----------------------------------------------------


def damaged_partitions(
    folder: Path, partitions: dict[str, dict[str, Any]], stat_cache: Path
) -> list[Damage]:
    """The manifest's partitions of one source that are missing or whose content is not
    what the manifest records. Files whose size and mtime match the local stat cache of
    the last check are not hashed again (var/collect/, a shortcut only)."""
    known = read_json(stat_cache, default={}) or {}
    seen: dict[str, list[Any]] = {}
    damage = []
    for name, entry in sorted(partitions.items()):
        path = folder / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            damage.append(Damage(path, MISSING))
            continue
        cached = known.get(name)
        if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
            digest = cached[2]
        else:
            digest = sha256_file(path)
        seen[name] = [stat.st_size, stat.st_mtime_ns, digest]
        expected = str(entry.get("sha256"))
        if digest != expected:
            detail = f"sha256 {digest[:12]}..., the manifest records {expected[:12]}..."
            damage.append(Damage(path, ALTERED, detail))
    write_json(stat_cache, seen)
    return damage


def repair_partitions(
    paths: Paths, source: str, partitions: dict[str, dict[str, Any]]
) -> list[str]:
    """Check a source's partitions against the manifest and restore the damaged ones from
    the DVC cache. Returns the days that could not be restored: they are removed from
    `partitions` (and from disk, when altered) for collect to read them again."""
    folder = paths.raw / source
    reread = []
    for damage in damaged_partitions(folder, partitions, partitions_of(paths, source)):
        log.warning("%s: %s", source, damage)
        name = damage.path.name
        if restore_from_dvc_cache(paths.root, damage.path, partitions[name]["sha256"]):
            continue
        damage.path.unlink(missing_ok=True)
        del partitions[name]
        reread.append(name.removesuffix(".parquet"))
    return reread


def restore_from_dvc_cache(root: Path, path: Path, sha256: str) -> bool:
    """Put back `path` from the DVC cache object dvc.lock records for it, if that object
    exists and holds what the manifest records (`sha256`). True when restored."""
    cached = dvc_object(root, path)
    if cached is None or not cached.exists() or sha256_file(cached) != sha256:
        return False
    with atomic_path(path) as tmp:
        shutil.copyfile(cached, tmp)
    log.warning("restored %s from the DVC cache", path.relative_to(root))
    return True


def dvc_object(root: Path, path: Path) -> Path | None:
    """The cache file of `path` as the last `dvc repro` recorded it (dvc.lock), or None."""
    import yaml

    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    relpath = path.resolve().relative_to(root)
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            out_path, md5 = Path(out["path"]), str(out.get("md5", ""))
            if relpath == out_path and md5 and not md5.endswith(".dir"):
                return cache_file(root, md5)
            if out_path in relpath.parents and md5.endswith(".dir"):
                listing = cache_file(root, md5)
                if not listing.exists():
                    return None
                inside = relpath.relative_to(out_path).as_posix()
                for item in json.loads(listing.read_text()):
                    if item.get("relpath") == inside:
                        return cache_file(root, item["md5"])
    return None


def cache_file(root: Path, md5: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


# --- DVC cache objects against their names ---------------------------------------------------


def verify_cache(root: Path) -> tuple[list[str], list[str]]:
    """Check every cache object the outputs in dvc.lock refer to. Returns (repaired,
    damaged): an object whose content does not hash to its name is rewritten from the
    workspace file when that one is intact; otherwise it is reported, naming the file."""
    import yaml

    lock = root / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    repaired: list[str] = []
    damaged: list[str] = []
    for name, stage in stages.items():
        for out in stage.get("outs", []):
            if out.get("cache", True) is False or not out.get("md5"):
                continue
            for relpath, md5 in _objects(root, Path(out["path"]), str(out["md5"])):
                problem = _check_object(root, relpath, md5, name)
                if problem is None:
                    continue
                fixed, message = problem
                (repaired if fixed else damaged).append(message)
    return repaired, damaged


def _objects(root: Path, out: Path, md5: str) -> list[tuple[Path, str]]:
    if not md5.endswith(".dir"):
        return [(out, md5)]
    listing = cache_file(root, md5)
    if not listing.exists():
        return []  # not in this cache (pulled partially): nothing here to push either
    return [(out / item["relpath"], item["md5"]) for item in json.loads(listing.read_text())]


def _check_object(root: Path, relpath: Path, md5: str, stage: str) -> tuple[bool, str] | None:
    cached = cache_file(root, md5)
    if not cached.exists() or md5_file(cached) == md5:
        return None
    workspace = root / relpath
    if workspace.exists() and md5_file(workspace) == md5:
        with atomic_path(cached) as tmp:
            shutil.copyfile(workspace, tmp)
        os.chmod(cached, 0o444)  # DVC keeps cache files read-only
        return True, f"{cached.relative_to(root)} ({relpath}) was corrupt; rewritten from {relpath}"
    state = "differs too" if workspace.exists() else "is gone"
    return False, (
        f"{cached.relative_to(root)} ({relpath}, stage {stage}) is corrupt: its content does "
        f"not hash to its name, and {relpath} {state}. "
        f"Repair: `dvc fetch` it from a remote that has a good copy (then `dvc checkout`), or "
        f"rebuild it (`dvc repro --force {stage}`; for raw data, re-collect)"
    )


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def partitions_of(paths: Paths, source: str) -> Path:
    """Where collect keeps the stat cache of a source's partition check."""
    return paths.collect_state / f"{source}.partitions.json"
