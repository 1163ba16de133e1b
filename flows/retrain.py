"""The retrain policy (`schedule.retrain_when`): after validation, is a new model due?

A run retrains when there is no trained model yet, when enough validated flights arrived
on days newer than the last training saw, when the last training is old enough, or when
forced. Otherwise the stages after validation are skipped: "no retrain needed". Rows
corrected on days the model already saw do not count as new.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from tasks.config import RetrainWhen
from tasks.io import read_json
from tasks.paths import Paths


@dataclass(frozen=True)
class LastTraining:
    newest_day: str  # the last day of the data it saw (YYYY-MM-DD)
    finished: dt.datetime


@dataclass(frozen=True)
class Verdict:
    retrain: bool
    reason: str


def decide(
    rule: RetrainWhen,
    last: LastTraining | None,
    new_rows: int,
    now: dt.datetime,
    force: str | None = None,
) -> Verdict:
    """`force`: why the policy is overridden (--force, parameter overrides), or None."""
    if force:
        return Verdict(True, f"forced: {force}")
    if last is None:
        return Verdict(True, "no trained model yet")
    days = (now - last.finished).total_seconds() / 86400
    seen = f"{new_rows:,} new rows since {last.newest_day}, last training {days:.1f} days ago"
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


def last_training(paths: Paths) -> LastTraining | None:
    """From models/train.json: the newest day of its test window, and when it finished
    (the file's time for a training recorded before `finished` existed)."""
    info = paths.models / "train.json"
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
    rule: RetrainWhen, paths: Paths, force: str | None, now: dt.datetime | None = None
) -> Verdict:
    last = last_training(paths)
    new = rows_after(paths.validated / "flights", last.newest_day) if last else 0
    return decide(rule, last, new, now or dt.datetime.now(dt.UTC), force)
