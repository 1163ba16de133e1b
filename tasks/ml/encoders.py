"""Categorical values as the model's codes and numbers as its floats: fitted on the training
window, saved beside the model, and the fast path for a few rows (serving)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.ml.feature_store import DayStats, Moments, combined, scale
from tasks.ml.features import (
    CATEGORICAL,
    NUMERIC,
    PASSED_THROUGH,
    complete,
    conform,
    day_stats,
    model_inputs,
)


@dataclass
class Encoders:
    """Vocabularies and scalers fitted on train rows only; plain JSON when saved.

    A missing numeric value is filled with the train mean (then scaled, it is 0) and
    flagged: a mean, unlike a median, is combined exactly from each day's statistics,
    so the encoders are refitted each day without reading the rows again."""

    vocab: dict[str, list[str]] = field(default_factory=dict)  # index 0 = unknown
    fill: dict[str, float] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, rows: pd.DataFrame, min_count: int = 1) -> Encoders:
        """Fit on raw joined train rows."""
        return cls.from_stats([day_stats(rows)], min_count)

    @classmethod
    def from_stats(cls, days: list[DayStats], min_count: int = 1) -> Encoders:
        """Fit on the statistics of the train days, combined in their order."""
        enc = cls()
        rows, counts, moments = combined(days)
        for col in CATEGORICAL:
            seen: Mapping[str, int] = counts.get(col, {})
            enc.vocab[col] = sorted(v for v, n in seen.items() if n >= min_count)
        for col in NUMERIC:
            enc.fill[col], enc.mean[col], enc.std[col] = scale(rows, moments.get(col, Moments()))
        return enc

    @functools.cached_property
    def _places(self) -> dict[str, dict[str | None, int]]:
        """Per column, value -> code (1 + its place in the vocabulary), for few rows."""
        return {c: {v: i + 1 for i, v in enumerate(self.vocab[c])} for c in CATEGORICAL}

    def cardinalities(self) -> list[int]:
        return [len(self.vocab[c]) + 1 for c in CATEGORICAL]

    def transform(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Raw joined rows -> (codes int64 [n, n_categorical],
        numeric float32 [n, n_numeric + missing flags]).

        A few rows (a served request) take a path without pandas' per-column work, which
        costs milliseconds per call; both paths give the same bits (tested)."""
        if len(rows) <= FEW_ROWS:
            categories, values = _few_rows_inputs(rows)
            codes = np.array(
                [[self._places[c].get(v, 0) for c, v in zip(CATEGORICAL, row, strict=True)]
                 for row in zip(*categories, strict=True)],
                dtype=np.int64,
            ).reshape(len(values), len(CATEGORICAL))  # fmt: skip
        else:
            frame = model_inputs(conform(rows))
            codes = np.stack([_codes(frame[c], self.vocab[c]) for c in CATEGORICAL], axis=1)
            values = frame[NUMERIC].to_numpy(dtype=np.float64, na_value=np.nan)
        # Whole-matrix arithmetic: the same float64 operations per value as column by
        # column, without pandas' per-column overhead.
        missing = np.isnan(values)
        fill, mean, std = (np.array([d[c] for c in NUMERIC])
                           for d in (self.fill, self.mean, self.std))  # fmt: skip
        scaled = (np.where(missing, fill, values) - mean) / std
        return codes.astype(np.int64), np.concatenate(
            [scaled.astype(np.float32), missing.astype(np.float32)], axis=1
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Encoders:
        data = dict(data)
        if "median" in data:  # a model packaged before fills were train means
            data["fill"] = data.pop("median")
        return cls(**data)


def _codes(values: pd.Series, vocab: list[str]) -> np.ndarray:
    """1 + the value's place in the vocabulary; 0 for unknown or missing."""
    strings = values.astype("string").to_numpy(dtype=object, na_value=None)
    return pd.Index(vocab, dtype=object).get_indexer(strings).astype(np.int64) + 1


# Up to this many rows, `Encoders.transform` reads values row by row instead of through
# pandas: one served row then costs tens of microseconds, not milliseconds.
FEW_ROWS = 8


def _few_rows_inputs(rows: pd.DataFrame) -> tuple[list[list[str | None]], np.ndarray]:
    """What `model_inputs(conform(rows))` gives, as category strings and a float64
    matrix, computed value by value with the same arithmetic."""
    rows = complete(rows)
    table = rows.to_numpy(dtype=object)  # one call; selecting columns first costs 10x
    at = {c: i for i, c in enumerate(rows.columns)}
    categories: dict[str, list[str | None]] = {c: [] for c in CATEGORICAL}
    numeric = []
    for row in table:
        year, month, day = (int(row[at[c]]) for c in ("year", "month", "day"))
        hour, minute = int(row[at["hour"]]), int(row[at["minute"]])
        for column in ("carrier", "origin", "dest", "manufacturer"):
            categories[column].append(_text(row[at[column]]))
        categories["weekday"].append(str(dt.date(year, month, day).weekday()))
        categories["sched_hour"].append(str(hour))
        values = {
            "sched_minute_of_day": float(hour * 60 + minute),
            "plane_age": np.float64(year) - _number(row[at["plane_year"]]),
            **{c: _number(row[at[c]]) for c in PASSED_THROUGH},
        }  # fmt: skip
        numeric.append([values[c] for c in NUMERIC])
    matrix = np.array(numeric, dtype=np.float64).reshape(len(table), len(NUMERIC))
    return [categories[c] for c in CATEGORICAL], matrix


def _text(value: Any) -> str | None:
    return (
        None
        if value is None or value is pd.NA or (isinstance(value, float) and value != value)
        else str(value)
    )


def _number(value: Any) -> np.float64:
    return np.float64(np.nan) if value is None or value is pd.NA else np.float64(value)
