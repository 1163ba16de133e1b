"""The record of a candidate, kept where other machines can read it.

After evaluate and before the release, `publish` pushes every output dvc.lock records to
the DVC remote and logs to the candidate's MLflow run, under `lineage/`:

    record.json    git commit, dirty flag and diff size, the DVC remote (name and URL, no
                   credentials), the Prefect flow run, requirements.lock's SHA-256, Python
    params.yaml    as the run used it
    dvc.lock       every stage's inputs and outputs, as the run left them
    manifest.json  per source: watermark, rows, partition files and their SHA-256
    code.diff      when the working copy was dirty: its change from the commit (binary
                   git diff, untracked files included), so a dirty run can be rebuilt too

A run is recorded once (tag `lineage.recorded`); publishing again only pushes. With
`lineage.data_branch` set, each record is also a commit on that git branch holding the
code, dvc.lock and the metrics (the DVC convention of a commit per data version), made
without touching the checkout: `git checkout plumber/data~2 && dvc pull` restores one.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.core import clock, dvc_internals, tracking
from tasks.core.config import Params
from tasks.core.errors import PlumberError, StepError
from tasks.core.io import require, sha256_file
from tasks.core.paths import Paths
from tasks.core.secrets import mask_urls
from tasks.lineage import git, remote

log = logging.getLogger(__name__)

FOLDER = "lineage"  # the artifact folder of the record in the training run
RECORDED_TAG = "lineage.recorded"
FILES = ("record.json", "params.yaml", "dvc.lock", "manifest.json")  # code.diff when dirty
DIFF = "code.diff"
FIRST_REBUILT = "featurize"  # a rebuild reruns this stage and those after it
# What a candidate's record needs the stage outputs to agree with (dvc.lock against disk).
CANDIDATE_OUTS = {"train": "models/model.pt", "evaluate": "reports/test_predictions.parquet"}


class RecordIncomplete(PlumberError):
    """A run's record lacks what rebuilding needs; the message names what."""

    kind = "incomplete record"
    exit_code = 2


@dataclass
class Record:
    """A record as read back from a run: its files, parsed."""

    run_id: str
    info: dict[str, Any]
    params: bytes
    lock: dict[str, Any]
    lock_bytes: bytes
    manifest: dict[str, Any]
    diff: bytes = b""
    missing: list[str] = field(default_factory=list)


def spec_of(paths: Paths, found: Record) -> dict[str, Any]:
    """The dvc.yaml of the record's commit (this checkout's when the clone lacks it)."""
    commit = found.info.get("git_commit", "")
    if commit and git.has_commit(paths.root, commit):
        text = git.git(paths.root, "show", f"{commit}:dvc.yaml", check=False)
        if text:
            return dict(yaml.safe_load(text) or {})
    return _spec(paths.root)


def _spec(root: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((root / "dvc.yaml").read_text()) or {})


def outputs(root: Path) -> list[str]:
    """Every path dvc.yaml's stages write, the .gitignore DVC writes beside each, and
    dvc.lock: outputs, not code (a fresh clone after one run is not "dirty")."""
    found = ["dvc.lock", *(path for _, path, _ in remote.declared_outs(_spec(root)))]
    beside = {str(Path(path).parent / ".gitignore") for path in found if "/" in path}
    return found + sorted(beside)


def metric_files(root: Path) -> list[str]:
    return [path for kind, path, _ in remote.declared_outs(_spec(root)) if kind == "metrics"]


def rebuilt_stages(lock: dict[str, Any]) -> list[str]:
    """The stages a rebuild reruns: FIRST_REBUILT and those after it, in dvc.lock's order."""
    names = list(lock.get("stages") or {})
    return names[names.index(FIRST_REBUILT) :] if FIRST_REBUILT in names else []


def check_candidate(paths: Paths, lock: dict[str, Any]) -> None:
    """The candidate is what dvc.lock says built it: its model and predictions on disk
    are the recorded outputs, and the code, params and commands of the stages a rebuild
    reruns are as they ran. Else the record would name what did not build it."""
    from tasks.data.integrity import md5_file

    stages = lock.get("stages") or {}
    for stage, relpath in CANDIDATE_OUTS.items():
        outs = {o["path"]: o.get("md5") for o in stages.get(stage, {}).get("outs", [])}
        path = paths.root / relpath
        if relpath not in outs or not path.exists() or md5_file(path) != outs[relpath]:
            raise StepError(
                f"{relpath} is not what dvc.lock records for stage {stage}: it was changed "
                "outside DVC; run `dvc repro` (or `plumber run`) so the candidate and its "
                "record agree"
            )
    changed = dvc_internals.drift(paths.root, rebuilt_stages(lock))
    if changed:
        raise StepError(
            f"the candidate was built by other code or params than the working copy holds "
            f"now ({'; '.join(changed)}): retrain it (`plumber run --force`, or `dvc repro`) "
            "or restore them, so that its record names what built it"
        )


def publish(paths: Paths, params: Params, run_id: str, flow_run_id: str | None) -> dict[str, Any]:
    """Push the data, then record the candidate `run_id` (once). Returns the record."""
    import mlflow

    cfg = params.lineage
    if not paths.dvc_lock.exists():
        raise StepError("dvc.lock is missing: the stages never ran under DVC (`dvc repro` or "
                        "`plumber run` writes it), so there is nothing to record")  # fmt: skip
    lock_bytes = paths.dvc_lock.read_bytes()
    tracking.prepare(paths)
    client = mlflow.MlflowClient()
    run = tracking.find(f"MLflow run {run_id}", lambda: client.get_run(run_id))
    if run is None:
        raise StepError(f"the candidate's MLflow run {run_id} (models/train.json) is not in "
                        f"{mask_urls(tracking.tracking_uri(paths))}")  # fmt: skip
    recorded_before = bool(run.data.tags.get(RECORDED_TAG))
    if not recorded_before:  # what the record will say must be true now
        check_candidate(paths, yaml.safe_load(lock_bytes) or {})
    target = remote.configured(paths.root, cfg.remote)
    remote.push(paths.root, target, cfg.push_attempts, cfg.push_retry_delay_seconds,
                cfg.push_timeout_seconds)  # fmt: skip
    if recorded_before:
        log.info("record: run %s was recorded before; its data is in %s", run_id, target.url)
        return {"run_id": run_id, "remote": target.to_json(), "recorded_before": True}
    shot = git.snapshot(paths.root, leave_out=outputs(paths.root))
    info = {
        "version": 1, "run_id": run_id, "git_commit": shot.commit, "git_dirty": shot.dirty,
        "diff_bytes": len(shot.diff), "remote": target.to_json(),
        "prefect_flow_run_id": flow_run_id,
        "requirements_lock_sha256": sha256_file(paths.requirements_lock),
        "python": platform.python_version(), "platform": f"{sys.platform}-{platform.machine()}",
        "recorded_at": clock.stamp(), "data_version": _data_version(paths, params, shot, run_id),
    }  # fmt: skip
    files = {"record.json": json.dumps(info, indent=2).encode(),
             "params.yaml": paths.params.read_bytes(), "dvc.lock": lock_bytes,
             "manifest.json": require(paths.manifest, "collect").read_bytes()}  # fmt: skip
    if shot.dirty:
        files[DIFF] = shot.diff
    _write(client, run_id, files, info)
    changes = f" + {len(shot.diff):,} bytes of changes" if shot.dirty else ""
    log.info("record: run %s recorded (commit %s%s); data in %s",
             run_id, shot.commit[:12], changes, target.url)  # fmt: skip
    return info


def _write(client: Any, run_id: str, files: dict[str, bytes], info: dict[str, Any]) -> None:
    """The record's files as the run's artifacts, then its tags, `lineage.recorded` last:
    a run that has it holds all of the record."""
    with tempfile.TemporaryDirectory(prefix="plumber-record-") as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        client.log_artifacts(run_id, tmp, FOLDER)
    tags = {"lineage.commit": info["git_commit"], "lineage.dirty": str(info["git_dirty"]),
            "lineage.remote": info["remote"]["url"],
            "lineage.data_version": info["data_version"] or ""}  # fmt: skip
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.set_tag(run_id, RECORDED_TAG, "true")


def _data_version(paths: Paths, params: Params, shot: git.Snapshot, run_id: str) -> str | None:
    """The commit of this data version on lineage.data_branch, when set and in git."""
    branch = params.lineage.data_branch
    if not branch or not git.is_repository(paths.root):
        return None
    extra = {name: (paths.root / name).read_bytes()
             for name in ["dvc.lock", *metric_files(paths.root)]
             if (paths.root / name).exists()}  # fmt: skip
    with_data = git.snapshot(paths.root, leave_out=outputs(paths.root), extra=extra)
    message = f"plumber: data version of MLflow run {run_id}\n\ncode: {shot.commit}" + (
        " (with uncommitted changes)" if shot.dirty else ""
    )
    return git.commit_to_branch(paths.root, branch, with_data, message)


def recorded(client: Any, run_id: str) -> bool:
    run = tracking.find(f"MLflow run {run_id}", lambda: client.get_run(run_id))
    return bool(run is not None and run.data.tags.get(RECORDED_TAG))


def load(client: Any, run_id: str) -> Record:
    """The record of `run_id`, read from its MLflow run. `missing` names what it lacks."""
    run = tracking.find(f"MLflow run {run_id}", lambda: client.get_run(run_id))
    if run is None:
        raise RecordIncomplete(f"there is no MLflow run {run_id}")
    with tempfile.TemporaryDirectory(prefix="plumber-record-") as tmp:
        names: set[str] = set()
        if run.data.tags.get(RECORDED_TAG):
            client.download_artifacts(run_id, FOLDER, tmp)
            names = {p.name for p in (Path(tmp) / FOLDER).iterdir()}
        missing = [f"{FOLDER}/{name}" for name in FILES if name not in names]

        def read(name: str) -> bytes:
            path = Path(tmp) / FOLDER / name
            return path.read_bytes() if path.exists() else b""

        info = json.loads(read("record.json") or b"{}")
        if info.get("git_dirty") and DIFF not in names:
            missing.append(f"{FOLDER}/{DIFF}")
        lock_bytes = read("dvc.lock")
        return Record(
            run_id=run_id, info=info, params=read("params.yaml"),
            lock=yaml.safe_load(lock_bytes) or {}, lock_bytes=lock_bytes,
            manifest=json.loads(read("manifest.json") or b"{}"), diff=read(DIFF),
            missing=missing,
        )  # fmt: skip


def gaps(paths: Paths, client: Any, run_id: str, override_remote: str = "") -> list[str]:
    """What rebuilding `run_id` would lack: record files, and data objects its recorded
    dvc.lock names that the recorded DVC remote does not hold. Empty: nothing."""
    found = load(client, run_id)
    if found.missing:
        return found.missing
    return objects_missing(paths, found, override_remote)


def objects_missing(paths: Paths, found: Record, override_remote: str = "") -> list[str]:
    return remote_check(paths, found, override_remote)[1]


def remote_check(
    paths: Paths, found: Record, override_remote: str = "", only: set[str] | None = None
) -> tuple[int, list[str]]:
    """How many data objects the record's dvc.lock names (or its outputs in `only`), and
    those its remote lacks."""
    target = remote.for_record(paths.root, found.info["remote"], override_remote)
    outs = remote.cached_outs(found.lock, spec_of(paths, found))
    if only is not None:
        outs = [out for out in outs if out[1] in only]
    try:
        checked, gone = remote.missing(target, outs)
    except Exception as exc:  # an unreachable remote cannot vouch for anything
        return 0, [f"the DVC remote {target.url} could not be read ({type(exc).__name__}: {exc})"]
    return checked, [f"{path} (not in {target.url})" for path in gone]
