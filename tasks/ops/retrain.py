"""The retrain policy (`schedule.retrain_when`): after validation, is a new model due?

A run retrains when there is no trained model yet, when enough validated rows arrived
on days newer than the last training saw, when the last training is old enough, or when
forced. Otherwise the stages after validation are skipped: "no retrain needed". Rows
corrected on days the model already saw do not count as new.

Whatever the policy says, a run first finishes what a stopped run left undone: a stage
after validation whose recorded inputs (dvc.lock) differ from what the stage before it
last produced (features built but never trained on; a model trained but never evaluated)
is run, and a trained candidate no release has judged yet is judged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core import clock
from tasks.core.config import RetrainWhen
from tasks.core.io import read_json
from tasks.core.paths import Paths


@dataclass(frozen=True)
class LastTraining:
    newest_day: str  # the last day of the data it saw (YYYY-MM-DD)
    finished: dt.datetime


@dataclass(frozen=True)
class Verdict:
    retrain: bool
    reason: str
    forced: bool = False  # run the retrain stages even where DVC finds nothing changed
    judge: bool = False  # no retrain, but a trained candidate still awaits its release


def decide(
    rule: RetrainWhen,
    last: LastTraining | None,
    new_rows: int,
    now: dt.datetime,
    force: str | None = None,
) -> Verdict:
    """`force`: why the policy is overridden (--force, parameter overrides), or None."""
    if force:
        return Verdict(True, f"forced: {force}", forced=True)
    if last is None:
        return Verdict(True, "no trained model yet")
    days = (now - last.finished).total_seconds() / 86400
    when = (f"last training {days:.1f} days ago" if days >= 0 else
            f"last training recorded {-days:.1f} days ahead of this machine's clock (the "
            "clock moved back: days since training do not count)")  # fmt: skip
    seen = f"{new_rows:,} new rows since {last.newest_day}, {when}"
    if new_rows >= rule.new_rows:
        return Verdict(True, f"{seen} (schedule.retrain_when.new_rows: {rule.new_rows:,})")
    if days >= rule.days_since_training:
        return Verdict(
            True,
            f"{seen} (schedule.retrain_when.days_since_training: {rule.days_since_training:g})",
        )
    return Verdict(
        False,
        f"{seen}; schedule.retrain_when: new_rows {rule.new_rows:,} "
        f"or days_since_training {rule.days_since_training:g}",
    )


def describe(verdict: Verdict | dict[str, object]) -> str:
    fields = verdict if isinstance(verdict, dict) else verdict.__dict__
    head = "retrain" if fields["retrain"] else "no retrain needed"
    return f"{head}: {fields['reason']}"


def unfinished_stages(lock: dict[str, Any], stages: list[str]) -> list[str]:
    """The stages (of `stages`, in order) that a stopped run left behind: a dependency of
    theirs that another of `stages` produces is recorded in dvc.lock with other content
    than that stage last produced."""
    entries = lock.get("stages", {})
    produced = {
        out["path"]: out.get("md5")
        for name in stages
        for out in entries.get(name, {}).get("outs", [])
    }
    behind = []
    for name in stages:
        deps = entries.get(name, {}).get("deps", [])
        if any(d["path"] in produced and d.get("md5") != produced[d["path"]] for d in deps):
            behind.append(name)
    return behind


def unjudged_run(paths: Paths) -> str | None:
    """The MLflow run of the trained candidate when no release has judged it yet: this
    checkout's shortcut (var/release/judged.json) says so, or on a stack, where another
    machine may have judged it, the registry."""
    train = read_json(paths.train_record, default=None)
    if not train:
        return None
    run_id = str(train["run_id"])
    judged = read_json(paths.judged, default={}) or {}
    if judged.get("run_id") == run_id:
        return None
    from tasks.core.profile import profile_path

    if profile_path() is not None and judged_in_registry(paths, run_id):
        return None
    return run_id


def judged_in_registry(paths: Paths, run_id: str) -> bool:
    from tasks.core.config import load_params
    from tasks.release import registry

    name = load_params(paths.params).release.model_name
    unfinished = (registry.PENDING, registry.ABANDONED)
    versions = registry.versions_of_run(registry.connect(paths), name, run_id)
    return any(v.tags.get("decision") not in (None, *unfinished) for v in versions)


def last_training(paths: Paths) -> LastTraining | None:
    """From models/train.json: the newest day of its test window, and when it finished
    (the file's time for a training recorded before `finished` existed)."""
    info = paths.train_record
    train = read_json(info, default=None)
    if not train:
        return None
    finished = train.get("finished")
    when = (
        dt.datetime.fromisoformat(finished)
        if finished
        else dt.datetime.fromtimestamp(info.stat().st_mtime, dt.UTC)
    )
    return LastTraining(newest_day=str(train["window"]["test"][1]), finished=when)


def rows_after(folder: Path, day: str) -> int:
    """Rows in the day partitions (YYYY-MM-DD.parquet) after `day`, from Parquet footers:
    nothing but the metadata is read."""
    import pyarrow.parquet as pq

    return sum(
        pq.ParquetFile(path).metadata.num_rows
        for path in folder.glob("*.parquet")
        if path.stem > day and path.stem[:4].isdigit()
    )


def verdict(
    rule: RetrainWhen,
    paths: Paths,
    force: str | None,
    now: dt.datetime | None = None,
    stages: list[str] | None = None,
) -> Verdict:
    """The policy's decision; `stages`: the stages it governs (after validation)."""
    import yaml

    lock_file = paths.dvc_lock
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.exists() else {}
    behind = unfinished_stages(lock or {}, stages or [])
    if behind and not force:
        return Verdict(True, f"finishing what a stopped run left: {', '.join(behind)} "
                             "had not run on its inputs' latest version")  # fmt: skip
    last = last_training(paths)
    new = rows_after(paths.validated / rule.source, last.newest_day) if last else 0
    decided = decide(rule, last, new, now or clock.now(), force)
    pending = None if decided.retrain else unjudged_run(paths)
    if pending:
        reason = f"{decided.reason}; the candidate of MLflow run {pending} awaits its release"
        return Verdict(False, reason, judge=True)
    return decided
