"""The data versions, in the shared record: what any machine's next run continues from.

On a stack (tasks/core/profile.py) each flow run begins with `restore` and ends with
`publish`. `publish` pushes every output dvc.lock names to the DVC remote, then records the
data version as a run of the MLflow experiment `<tracking.experiment>-data`: dvc.lock, the
manifest (per source its watermark, rows and partitions) and the outputs DVC does not
cache (models/train.json, the reports: git's in one checkout) as artifacts, and tags giving
its place in one line of versions (`data_version.seq`, `data_version.parent`). `restore`
brings the latest version into the checkout (dvc.lock written, its outputs pulled), so a
run on any worker collects from the watermarks the last run on any other left.

One line, never a fork: runs are one at a time across machines (the shared run lock), a
version is recorded only on top of the latest, and a checkout whose unrecorded work sits on
an older version (a run that died before publishing, while another machine went on) has that
work replaced by the latest version: it never reached the shared record, and the sources
still hold its rows, so the next collection takes them again.

    var/data_version.json   the version this checkout's data stands on (a shortcut: the
                            record decides)
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.core import clock, tracking
from tasks.core.config import Params
from tasks.core.errors import StepError
from tasks.core.io import read_json, write_json
from tasks.core.paths import Paths
from tasks.lineage import remote

log = logging.getLogger(__name__)

SEQ_TAG, PARENT_TAG, LOCK_TAG = (
    "data_version.seq",
    "data_version.parent",
    "data_version.lock_sha256",
)
FOLDER = "data_version"  # the artifacts: dvc.lock, manifest.json, outs/ (uncached outputs)
BASE = "data_version.json"


@dataclass(frozen=True)
class DataVersion:
    run_id: str
    seq: int
    lock_sha256: str


def experiment(paths: Paths) -> str:
    return f"{tracking.experiment_name(paths)}-data"


def lock_sha(paths: Paths) -> str:
    return (
        hashlib.sha256(paths.dvc_lock.read_bytes()).hexdigest() if paths.dvc_lock.exists() else ""
    )


def latest(paths: Paths) -> DataVersion | None:
    """The newest recorded data version, or None before the first."""
    import mlflow

    tracking.prepare(paths)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment(paths))
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id], filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=50,
    )  # fmt: skip
    versions = [_version(run) for run in runs if run.data.tags.get(SEQ_TAG)]
    return max(versions, key=lambda v: v.seq) if versions else None


def _version(run: Any) -> DataVersion:
    tags = run.data.tags
    return DataVersion(run.info.run_id, int(tags[SEQ_TAG]), tags.get(LOCK_TAG, ""))


def base(paths: Paths) -> DataVersion | None:
    """The version this checkout's data was restored from or published as."""
    found = read_json(paths.var / BASE, default=None)
    return DataVersion(**found) if found else None


def restore(paths: Paths, params: Params) -> str:
    """Bring the latest data version into the checkout, unless it is there already or the
    checkout's unrecorded work sits on it (a run that failed here, to be continued here).
    Returns what was done, in words (and logs it)."""
    done = _restore(paths, params)
    log.info("restore: %s", done)
    return done


def _restore(paths: Paths, params: Params) -> str:
    newest = latest(paths)
    if newest is None:
        return "no data version recorded yet: this run records the first"
    here, standing = lock_sha(paths), base(paths)
    if here == newest.lock_sha256:
        write_json(paths.var / BASE, asdict(newest))
        return f"data version {newest.seq} is here already"
    if standing is not None and standing.run_id == newest.run_id:
        return (
            f"continuing from data version {newest.seq} with this checkout's unrecorded "
            "changes (its last run ended before recording them)"
        )
    if here:
        log.warning(
            "this checkout's data (dvc.lock %s) is not the latest version %d: replaced by it; "
            "what it held beyond it was never recorded, and is collected again",
            here[:12], newest.seq,
        )  # fmt: skip
    _checkout(paths, params, newest)
    write_json(paths.var / BASE, asdict(newest))
    return (f"restored data version {newest.seq} (MLflow run {newest.run_id}; "
            f"{data_bytes(paths) / 1e6:.1f} MB of data)")  # fmt: skip


def data_bytes(paths: Paths) -> int:
    """The size of the data dvc.lock names in the DVC cache (what a fresh clone pulls)."""
    import yaml

    lock = yaml.safe_load(paths.dvc_lock.read_text()) or {}
    skip = set(uncached_outs(paths))
    return sum(
        int(out.get("size") or 0)
        for entry in (lock.get("stages") or {}).values()
        for out in entry.get("outs", [])
        if out["path"] not in skip
    )


def _checkout(paths: Paths, params: Params, version: DataVersion) -> None:
    """`version`'s dvc.lock and the outputs DVC does not cache (models/train.json, the
    reports) written in place, then its cached outputs pulled from the remote."""
    import mlflow

    from tasks.core.guard import run_guarded

    with tempfile.TemporaryDirectory(prefix="plumber-data-version-") as tmp:
        folder = Path(mlflow.MlflowClient().download_artifacts(version.run_id, FOLDER, tmp))
        for name in uncached_outs(paths):
            _put(folder / "outs" / name, paths.root / name)
        staged = paths.dvc_lock.with_suffix(".lock.restoring")
        staged.write_bytes((folder / "dvc.lock").read_bytes())
        staged.replace(paths.dvc_lock)
    target = remote.configured(paths.root, params.lineage.remote)
    argv = [sys.executable, "-m", "dvc", "pull", "--quiet", "--force", "-r", target.name]
    try:
        done = run_guarded(argv, timeout=params.lineage.push_timeout_seconds, cwd=paths.root)
    except subprocess.TimeoutExpired:
        raise StepError(f"dvc pull from {target.url}: no answer within "
                        f"{params.lineage.push_timeout_seconds:g} s") from None  # fmt: skip
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise StepError(
            f"data version {version.seq} could not be pulled from {target.url}: "
            f"{lines[-1].strip() if lines else f'exit {done.returncode}'}"
        )


def uncached_outs(paths: Paths) -> list[str]:
    """Outputs dvc.yaml keeps out of the DVC cache (git's, in one checkout): a data version
    carries them itself, or another machine would never see them."""
    import yaml

    spec = yaml.safe_load((paths.root / "dvc.yaml").read_text()) or {}
    return sorted(remote.uncached(spec))


def _put(source: Path, target: Path) -> None:
    """`source` (a file or folder) in place of `target`; nothing when the version lacks it."""
    import shutil

    if not source.exists():
        return
    if target.is_dir():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def publish(paths: Paths, params: Params, flow_run_id: str | None) -> dict[str, Any]:
    """Push the data, then record it as the next data version (nothing when the latest
    already is this dvc.lock). Returns the version, as JSON."""

    sha = lock_sha(paths)
    if not sha:
        raise StepError("dvc.lock is missing: no stage ran, so there is no data version")
    target = remote.configured(paths.root, params.lineage.remote)
    cfg = params.lineage
    remote.push(paths.root, target, cfg.push_attempts, cfg.push_retry_delay_seconds,
                cfg.push_timeout_seconds)  # fmt: skip
    newest = latest(paths)
    if newest is not None and newest.lock_sha256 == sha:
        write_json(paths.var / BASE, asdict(newest))
        return {**asdict(newest), "new": False, "remote": target.url}
    standing = base(paths)
    if newest is not None and (standing is None or standing.run_id != newest.run_id):
        raise StepError(
            f"data version {newest.seq} was recorded by another run since this checkout's "
            f"data was restored: this run's data is not on top of it, and is not recorded"
        )
    version = _record(paths, flow_run_id, newest, sha, target.url)
    write_json(paths.var / BASE, asdict(version))
    log.info("data version %d recorded (MLflow run %s); data in %s",
             version.seq, version.run_id, target.url)  # fmt: skip
    return {**asdict(version), "new": True, "remote": target.url}


def _record(
    paths: Paths, flow_run_id: str | None, parent: DataVersion | None, sha: str, url: str
) -> DataVersion:
    import mlflow

    seq = (parent.seq if parent else 0) + 1
    experiment_id = tracking.start(paths, experiment(paths))
    tags = {SEQ_TAG: str(seq), PARENT_TAG: parent.run_id if parent else "", LOCK_TAG: sha,
            "lineage.remote": url, "prefect.flow_run_id": flow_run_id or "",
            "recorded_at": clock.stamp()}  # fmt: skip
    client = mlflow.MlflowClient()
    _end_unfinished(client, experiment_id, seq)
    run = client.create_run(experiment_id, run_name=f"data-v{seq}", tags=tags)
    try:
        with tempfile.TemporaryDirectory(prefix="plumber-data-version-") as tmp:
            (Path(tmp) / "dvc.lock").write_bytes(paths.dvc_lock.read_bytes())
            if paths.manifest.exists():
                (Path(tmp) / "manifest.json").write_bytes(paths.manifest.read_bytes())
            for name in uncached_outs(paths):
                _put(paths.root / name, Path(tmp) / "outs" / name)
            client.log_artifacts(run.info.run_id, tmp, FOLDER)
    except BaseException as exc:  # not a version: ended, named so, never counted
        _end_as_not_recorded(client, run.info.run_id, seq, "FAILED", f"{type(exc).__name__}")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")  # FINISHED last: a whole version
    return DataVersion(run.info.run_id, seq, sha)


def _end_unfinished(client: Any, experiment_id: str, seq: int) -> None:
    """A data-vN left RUNNING by a process killed while recording it: ended KILLED before
    version N is recorded, so the UI never shows two runs named data-vN as versions."""
    left = client.search_runs([experiment_id], filter_string=(
        f"attributes.status = 'RUNNING' and tags.`{SEQ_TAG}` = '{seq}'"))  # fmt: skip
    for run in left:
        _end_as_not_recorded(client, run.info.run_id, seq, "KILLED", "its process was stopped")
        log.warning("data-v%d of an earlier run was never finished (%s): ended as KILLED",
                    seq, run.info.run_id)  # fmt: skip


def _end_as_not_recorded(client: Any, run_id: str, seq: int, status: str, why: str) -> None:
    client.set_tag(run_id, "mlflow.runName", f"data-v{seq} (not recorded)")
    client.set_tag(run_id, "plumber.end_reason", f"the data version was not recorded: {why}")
    client.set_terminated(run_id, status)
