"""data/features/: one file of feature rows per day, and what the windows are made of.

    data/features/days/<date>.parquet   the day's rows: date, the INPUT columns, the label
    data/features/days/<date>.json      what the day was built from (`inputs`) and its
                                        statistics (counts, means), which the encoders
                                        are fitted from without reading any row
    data/features/windows.json          the days of train, valid and test
    data/features/encoders.json         vocabularies and scalers, fitted on train only

A day's features depend on that day's flights and weather and on the planes only (the
history features are same-day), so a new day adds two files and rewrites two small
ones: the DVC push of a daily run is proportional to the day, not to the history.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.errors import StepError
from tasks.core.io import read_json

DAYS = "days"
WINDOWS = "windows.json"
WINDOW_NAMES = ("train", "valid", "test")


def days_folder(features: Path) -> Path:
    return features / DAYS


def day_rows_file(features: Path, day: str) -> Path:
    return features / DAYS / f"{day}.parquet"


def day_stats_file(features: Path, day: str) -> Path:
    return features / DAYS / f"{day}.json"


def read_day_record(features: Path, day: str) -> dict[str, Any]:
    """What featurize recorded of a day: `inputs`, `rows_sha256` and `stats`. A missing
    record is a StepError; a damaged one a ValueError naming it."""
    path = day_stats_file(features, day)
    record = read_json(path)
    if record is None:
        raise StepError(f"{path} is missing: run the featurize stage first (dvc repro featurize)")
    if not isinstance(record, dict) or not {"inputs", "stats"} <= record.keys():
        raise ValueError(f"{path}: not a day record of featurize")
    return record


def read_day_stats(features: Path, day: str) -> DayStats:
    return DayStats.from_json(read_day_record(features, day)["stats"])


def windows_file(features: Path) -> Path:
    return features / WINDOWS


def read_windows(features: Path) -> dict[str, list[str]]:
    data = read_json(windows_file(features))
    if data is None:
        raise StepError(
            f"{windows_file(features)} is missing: run the featurize stage first "
            "(dvc repro featurize)"
        )
    return {name: list(data[name]) for name in WINDOW_NAMES}


def read_window(features: Path, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of one window (train, valid or test), its days in order."""
    days = read_windows(features)[name]
    frames = [pd.read_parquet(day_rows_file(features, d), columns=columns) for d in days]
    return pd.concat(frames, ignore_index=True)


def choose_windows(
    days: list[str], test_days: int, valid_days: int, train_max_days: int | None
) -> dict[str, list[str]]:
    """Newest `test_days` days for test, the `valid_days` before for valid, the rest
    (at most `train_max_days`, the newest) for train."""
    days = sorted(days)
    if len(days) < test_days + valid_days + 1:
        raise ValueError(
            f"{len(days)} days of data; featurize.test_days + valid_days need at least "
            f"{test_days + valid_days + 1}"
        )
    train = days[: -test_days - valid_days]
    return {
        "train": train[-train_max_days:] if train_max_days else train,
        "valid": days[-test_days - valid_days : -test_days],
        "test": days[-test_days:],
    }


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations of a column's non-missing values;
    two combine exactly as the moments of their union would (Chan et al.)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        values = values[~np.isnan(values)]
        if not len(values):
            return cls()
        mean = float(values.mean())
        return cls(len(values), mean, float(((values - mean) ** 2).sum()))

    def __add__(self, other: Moments) -> Moments:
        if not other.n or not self.n:
            return other if not self.n else self
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * other.n / n,
                       self.m2 + other.m2 + delta * delta * self.n * other.n / n)  # fmt: skip


@dataclass(frozen=True)
class DayStats:
    """What the encoders need of a day's rows: each category's count, each numeric
    column's moments, the rows and the label's positives."""

    rows: int
    positives: int
    categories: dict[str, dict[str, int]]
    moments: dict[str, Moments]

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "positives": self.positives,
            "categories": {c: dict(sorted(v.items())) for c, v in self.categories.items()},
            "moments": {c: [m.n, m.mean, m.m2] for c, m in self.moments.items()},
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DayStats:
        return cls(data["rows"], data["positives"], data["categories"],
                   {c: Moments(int(n), float(mean), float(m2))
                    for c, (n, mean, m2) in data["moments"].items()})  # fmt: skip


def combined(
    days: Iterable[DayStats],
) -> tuple[int, dict[str, Counter[str]], dict[str, Moments]]:
    """The rows, category counts and moments of several days, combined in their order."""
    rows = 0
    counts: dict[str, Counter[str]] = {}
    moments: dict[str, Moments] = {}
    for day in days:
        rows += day.rows
        for column, values in day.categories.items():
            counts.setdefault(column, Counter()).update(values)
        for column, m in day.moments.items():
            moments[column] = moments.get(column, Moments()) + m
    return rows, counts, moments


def scale(rows: int, moments: Moments) -> tuple[float, float, float]:
    """Fill value, mean and standard deviation of a column whose missing values are
    filled with the mean of the others: the fill adds rows at the mean, so no deviation."""
    if not moments.n:
        return 0.0, 0.0, 1.0
    std = math.sqrt(moments.m2 / (rows - 1)) if rows > 1 else 0.0
    return moments.mean, moments.mean, std or 1.0
