"""`plumber reproduce REF`: the model of a record built again in a temporary workspace
(never the user's checkout), and compared bit for bit:

    1. code      the recorded commit (fetched from the git remote if this clone lacks it),
                 with the recorded uncommitted changes applied
    2. record    the recorded params.yaml and dvc.lock in place
    3. data      featurize's inputs fetched from the recorded DVC remote (with --offline,
                 from this checkout's DVC cache), and the recorded model and predictions
                 beside them, to compare with
    4. rebuild   `dvc repro --force --downstream featurize`: featurize, train, evaluate as
                 DVC runs them; collection is not repeated, its output is in the record
    5. compare   SHA-256 of the weights, metrics.json and test predictions (compare.py)

Nothing goes to the registry. Training's MLflow run goes to a store inside the workspace
(deleted with it), or with --log to the experiment `<tracking.experiment>-reproduce`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.core import processes, tracking
from tasks.core.config import Params
from tasks.core.errors import StepError
from tasks.core.paths import Paths
from tasks.lineage import git, record, remote
from tasks.ops.chain import Ref, resolve
from tasks.ops.compare import Compared, compare

log = logging.getLogger(__name__)

FIRST_STAGE = record.FIRST_REBUILT  # the ones before it are the record's data
IDENTICAL, DIFFERS, INCOMPLETE = 0, 1, 2
WORKSPACE_PREFIX = "plumber-reproduce-"
OWNER = ".plumber-owner.json"  # the process working in a workspace


@dataclass
class Result:
    run_id: str
    version: str | None
    compared: list[Compared] = field(default_factory=list)
    fetched_bytes: int = 0
    seconds: float = 0.0
    workspace: str | None = None  # kept with --keep

    @property
    def identical(self) -> bool:
        return bool(self.compared) and all(c.same for c in self.compared)

    @property
    def exit_code(self) -> int:
        return IDENTICAL if self.identical else DIFFERS

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["identical"] = self.identical
        for row in data["compared"]:
            row["same"] = row["recorded"] == row["rebuilt"]
        return data


@dataclass(frozen=True)
class Options:
    offline: bool = False  # data from this checkout's DVC cache, not the remote
    log_run: bool = False  # keep training's MLflow run (a scratch experiment)
    keep: bool = False  # leave the workspace for a look
    remote: str = ""  # a configured DVC remote's name or a URL instead of the recorded one


def reproduce(paths: Paths, params: Params, client: Any, ref: Ref, opts: Options) -> Result:
    """Rebuild `ref`'s model from its record and compare; RecordIncomplete (exit 2) when the
    record cannot be followed, naming what is missing."""
    started = time.perf_counter()
    found = record.load(client, ref.run_id)
    if found.missing:
        raise record.RecordIncomplete(
            f"MLflow run {ref.run_id} lacks {', '.join(found.missing)}: it was trained before "
            "records were kept, or its release never recorded it"
        )
    commit = found.info["git_commit"]
    if not git.fetch_commit(paths.root, commit):
        raise record.RecordIncomplete(
            f"git commit {commit} of run {ref.run_id} is in neither this clone nor its git "
            "remotes (was it pushed?)"
        )
    metrics = _recorded_metrics(client, ref.run_id)
    if not opts.offline:
        needed = {*inputs_of(pin_inputs(found.lock)), *record.CANDIDATE_OUTS.values()}
        gone = record.remote_check(paths, found, opts.remote, only=needed)[1]
        if gone:
            raise record.RecordIncomplete(f"run {ref.run_id}'s data is gone: {', '.join(gone)}")
    remove_stale_workspaces()
    work = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX))
    owner = work / OWNER
    owner.write_text(json.dumps({"pid": os.getpid(),
                                 "started": processes.started(os.getpid())}))  # fmt: skip
    result = Result(ref.run_id, ref.version, workspace=str(work) if opts.keep else None)
    try:
        _prepare(paths, found, work, opts)
        result.fetched_bytes = _fetch(work, found.lock)
        _rebuild(paths, params, work, opts)
        result.compared = compare(work, found.lock, metrics)
    finally:
        if opts.keep:
            owner.unlink(missing_ok=True)  # kept on purpose: never removed as stale
        else:
            shutil.rmtree(work, ignore_errors=True)
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def remove_stale_workspaces(folder: Path | None = None) -> list[Path]:
    """Remove the workspaces of reproductions whose process is gone (killed: nothing else
    could clean up after it). Returns those removed."""
    removed = []
    for work in Path(folder or tempfile.gettempdir()).glob(f"{WORKSPACE_PREFIX}*"):
        try:
            owner = json.loads((work / OWNER).read_text())
        except (OSError, ValueError):
            continue  # kept with --keep, or not ours
        if not processes.alive(int(owner["pid"]), owner.get("started")):
            shutil.rmtree(work, ignore_errors=True)
            log.warning("removed %s, left by a reproduction that was stopped", work)
            removed.append(work)
    return removed


def run(
    paths: Paths, params: Params, ref: str | None, opts: Options
) -> tuple[list[dict[str, Any]], int]:
    """`plumber reproduce`: REF, or with ref None every released version. Returns one
    report per model (its text under "text") and the exit code: the worst of them."""
    from tasks.release import registry

    client = registry.connect(paths)
    name = params.release.model_name
    refs = [resolve(client, name, ref)] if ref is not None else released(client, name)
    if not refs:
        raise StepError(f"{name} has no released version to reproduce")
    reports, worst = [], IDENTICAL
    for each in refs:
        try:
            result = reproduce(paths, params, client, each, opts)
        except record.RecordIncomplete as exc:
            if ref is not None:
                raise
            what = f"version {each.version} (run {each.run_id})"
            reports.append({"run_id": each.run_id, "version": each.version, "incomplete": str(exc),
                            "text": f"{what}: incomplete record: {exc}"})  # fmt: skip
            worst = max(worst, INCOMPLETE)
            continue
        reports.append({**result.to_json(), "text": describe(result)})
        worst = max(worst, result.exit_code)
    return reports, worst


def released(client: Any, name: str) -> list[Ref]:
    """Every version of `name` whose release decision was `released`, oldest first."""
    versions = client.search_model_versions(f"name = '{name}'")
    chosen = [v for v in versions if v.tags.get("decision") == "released"]
    return [
        Ref(v.run_id, name, str(v.version)) for v in sorted(chosen, key=lambda v: int(v.version))
    ]


def _recorded_metrics(client: Any, run_id: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="plumber-metrics-") as tmp:
        try:
            path = client.download_artifacts(run_id, "evaluation/metrics.json", tmp)
        except Exception as exc:
            if not tracking.not_found(exc) and "No such file" not in str(exc):
                raise
            raise record.RecordIncomplete(
                f"MLflow run {run_id} has no evaluation/metrics.json: it was never evaluated"
            ) from None
        return Path(path).read_bytes()


def pin_inputs(lock: dict[str, Any], stage: str = FIRST_STAGE) -> dict[str, Any]:
    """dvc.lock with the outputs that feed `stage` set to what `stage` recorded reading:
    the record stays true even when an earlier stage ran again after training."""
    stages = lock.get("stages") or {}
    wanted = {d["path"]: d for d in stages.get(stage, {}).get("deps", [])}
    for name, entry in stages.items():
        if name == stage:
            continue
        for out in entry.get("outs", []):
            if out["path"] in wanted:
                dep = wanted[out["path"]]
                out.update({k: dep[k] for k in ("md5", "size", "nfiles", "hash") if k in dep})
    return lock


def inputs_of(lock: dict[str, Any], stage: str = FIRST_STAGE) -> list[str]:
    """`stage`'s data inputs that an earlier stage wrote (what must be fetched)."""
    stages = lock.get("stages") or {}
    written = {o["path"] for n, s in stages.items() if n != stage for o in s.get("outs", [])}
    return [d["path"] for d in stages.get(stage, {}).get("deps", []) if d["path"] in written]


def _prepare(paths: Paths, found: record.Record, work: Path, opts: Options) -> None:
    """The recorded code, params.yaml and dvc.lock in `work`, DVC pointed at the data."""
    git.materialize(paths.root, found.info["git_commit"], found.diff, work)
    (work / "params.yaml").write_bytes(found.params)
    (work / "dvc.lock").write_text(yaml.safe_dump(pin_inputs(found.lock), sort_keys=False))
    if opts.offline:
        cache = paths.root / ".dvc" / "cache"  # laid out as a remote is: files/md5/...
        target = remote.Remote("offline", str(cache), {"url": str(cache)})
    else:
        target = remote.for_record(paths.root, found.info["remote"], opts.remote)
    options = {**target.options, "url": target.options.get("url", target.url)}
    section = "\n".join(f"    {k} = {_ini(v)}" for k, v in options.items())
    # A workspace of its own: no git repository, its own cache; readable only by this user
    # (the remote's options may hold credentials from this machine's local DVC config).
    (work / ".dvc" / "config.local").write_text(
        f"[core]\n    remote = record\n    no_scm = true\n['remote \"record\"']\n{section}\n"
    )
    (work / ".dvc" / "config.local").chmod(0o600)


def _ini(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _dvc(work: Path, *args: str, timeout: float = 3600, env: dict[str, str] | None = None) -> str:
    from tasks.core.guard import run_guarded

    argv = [sys.executable, "-m", "dvc", *args]
    try:
        done = run_guarded(argv, timeout=timeout, cwd=work, env=env or _env(work))
    except subprocess.TimeoutExpired:
        raise StepError(f"dvc {args[0]} in the workspace took over {timeout:g} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise StepError(f"dvc {' '.join(args)} failed in the workspace: "
                        + " | ".join(lines[-3:]))  # fmt: skip
    return done.stdout


def _env(work: Path) -> dict[str, str]:
    """The workspace's stages run with this interpreter, their own MLflow store."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "PLUMBER_FLOW_RUN", "DVC_"))}  # fmt: skip
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _fetch(work: Path, lock: dict[str, Any]) -> int:
    """featurize's inputs checked out; the recorded model and predictions in the cache.
    Returns the bytes fetched."""
    compared = list(record.CANDIDATE_OUTS.values())
    _dvc(work, "fetch", "--quiet", *inputs_of(lock), *compared)
    _dvc(work, "checkout", "--quiet", *inputs_of(lock))
    cache = work / ".dvc" / "cache"
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())


def _rebuild(paths: Paths, params: Params, work: Path, opts: Options) -> None:
    env = _env(work)
    if opts.log_run:
        name = f"{params.tracking.experiment}-reproduce"
        tracking.start(paths, experiment=name)  # made here: its artifacts under this var/
        env.update(MLFLOW_TRACKING_URI=tracking.tracking_uri(paths), MLFLOW_EXPERIMENT_NAME=name)
    limit = sum(params.flow.timeout_for(s) or 7200 for s in ("featurize", "train", "evaluate"))
    log.info("reproduce: dvc repro --force --downstream %s in %s", FIRST_STAGE, work)
    _dvc(work, "repro", "--force", "--downstream", FIRST_STAGE, timeout=limit, env=env)


def describe(result: Result) -> str:
    what = (
        f"version {result.version} (run {result.run_id})"
        if result.version
        else f"run {result.run_id}"
    )
    head = (f"{what}: identical" if result.identical else f"{what}: DIFFERS") + (
        f" ({result.seconds:g} s, {result.fetched_bytes / 1e6:.1f} MB fetched)"
    )
    lines = [head]
    if not result.identical:
        lines.append(f"  {'':<34} {'recorded':<16} {'rebuilt':<16}")
        for c in result.compared:
            mark = "same" if c.same else "DIFFERS"
            lines.append(f"  {c.what:<34} {c.recorded[:16]} {c.rebuilt[:16]} {mark}"
                         + (f"  ({c.detail})" if c.detail and not c.same else ""))  # fmt: skip
    if result.workspace:
        lines.append(f"  workspace kept: {result.workspace}")
    return "\n".join(lines)
