"""Features known before a flight's scheduled departure, and their encoders.

Pure functions over frames. Featurize builds the features with them, and the released
model (a later step) packages the very same `Encoders`, so training and serving cannot
drift apart.

Time on a flight's day is counted in minutes after local midnight. A flight's outcome
(delayed `delay_minutes` or more, or cancelled) becomes known at
``known_at = min(actual departure, scheduled + delay_minutes)``: a flight that has not
left that long after its slot is a positive whether it leaves later or never. A same-day
history feature of a flight uses only *other* flights whose outcome was known at least
``history_gap_minutes`` before its scheduled departure. The values: `RowRules`, from
params.yaml's featurize section.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.ml.columns import HISTORY, INPUT, WEATHER
from tasks.ml.feature_store import DayStats, Moments, choose_windows, combined, scale

LABEL = "delayed"


@dataclass(frozen=True)
class RowRules:
    """What the label and the same-day history mean (featurize: in params.yaml)."""

    delay_minutes: float  # the label: departed this late or later, or cancelled
    history_gap_minutes: float  # other flights count only if known this long before
    recent_minutes: float  # the "recent" delay rate looks back this far from the cutoff
    plane_legs_back: int  # the plane's earlier legs searched for its latest departure


# No month and no day of year: with under a year of history the test window's season is
# never in train, so a month would be an unseen category and a day of year an extrapolation.
CATEGORICAL = ["carrier", "origin", "dest", "weekday", "sched_hour", "manufacturer"]
NUMERIC = [
    "distance", "sched_minute_of_day", *WEATHER, "plane_age", "seats", "engines", *HISTORY,
]  # fmt: skip


# The numeric features that are input columns as they are.
PASSED_THROUGH = ["distance", *WEATHER, "seats", "engines", *HISTORY]


def label(flights: pd.DataFrame, delay_minutes: float) -> pd.Series:
    """Delayed `delay_minutes` or more at departure, or cancelled (no departure)."""
    return (flights["dep_delay"].isna() | (flights["dep_delay"] >= delay_minutes)).astype("int8")


def outcome_known_at(flights: pd.DataFrame, delay_minutes: float) -> pd.Series:
    """Minutes after local midnight when the flight's label became known."""
    sched = flights["hour"] * 60 + flights["minute"]
    departed = sched + flights["dep_delay"]  # NaN when cancelled
    return np.minimum(departed.fillna(np.inf), sched + delay_minutes)


def _known_before(
    frame: pd.DataFrame, group: list[str], cutoff: pd.Series, known: pd.Series, positive: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """Per row: how many other rows of its group were known by ``cutoff``, and how many
    of those were positive. Sorted known times plus searchsorted: O(n log n)."""
    count = np.zeros(len(frame))
    hits = np.zeros(len(frame))
    for _, idx in frame.groupby(group, sort=False).indices.items():
        known_g = known.to_numpy()[idx]
        by_time = np.argsort(known_g, kind="stable")
        cum_pos = np.concatenate([[0], np.cumsum(positive.to_numpy()[idx][by_time])])
        n = np.searchsorted(known_g[by_time], cutoff.to_numpy()[idx], side="right")
        count[idx], hits[idx] = n, cum_pos[n]
    # A flight that left early enough would count itself: take it out.
    own = (known <= cutoff).to_numpy()
    count -= own
    hits -= own & positive.to_numpy().astype(bool)
    return pd.Series(count, index=frame.index), pd.Series(hits, index=frame.index)


def history_features(flights: pd.DataFrame, rules: RowRules) -> pd.DataFrame:
    """Same-day history of the origin airport, the carrier and the plane."""
    f = flights
    sched = f["hour"] * 60 + f["minute"]
    cutoff = sched - rules.history_gap_minutes
    known = outcome_known_at(f, rules.delay_minutes)
    positive = label(f, rules.delay_minutes)
    day = ["year", "month", "day"]
    n_origin, pos_origin = _known_before(f, [*day, "origin"], cutoff, known, positive)
    n_carrier, pos_carrier = _known_before(f, [*day, "carrier"], cutoff, known, positive)
    # The recent window only: outcomes known earlier than that count as never known.
    recent = known.where(known >= cutoff - rules.recent_minutes, np.inf)
    n_recent, pos_recent = _known_before(f, [*day, "origin"], cutoff, recent, positive)
    out = pd.DataFrame(index=f.index)
    out["origin_known_flights"] = n_origin
    out["origin_known_delay_rate"] = (pos_origin / n_origin).where(n_origin > 0)
    out["origin_recent_delay_rate"] = (pos_recent / n_recent).where(n_recent > 0)
    out["carrier_known_delay_rate"] = (pos_carrier / n_carrier).where(n_carrier > 0)
    plane = _plane_history(f, sched, cutoff, rules.plane_legs_back)
    out[["plane_legs_before", "plane_prev_dep_delay"]] = plane
    return out


def _plane_history(
    f: pd.DataFrame, sched: pd.Series, cutoff: pd.Series, legs_back: int
) -> pd.DataFrame:
    """The plane's earlier scheduled legs today (the schedule is public), and the
    departure delay of its latest leg that had actually left by the cutoff."""
    legs = pd.DataFrame(
        {"tail": f["tailnum"], "y": f["year"], "m": f["month"], "d": f["day"], "sched": sched,
         "departed": sched + f["dep_delay"], "delay": f["dep_delay"], "cutoff": cutoff},
        index=f.index,
    ).dropna(subset=["tail"])  # fmt: skip
    legs = legs.sort_values(["tail", "y", "m", "d", "sched"], kind="stable")
    same_plane_day = legs.groupby(["tail", "y", "m", "d"], sort=False)
    before = same_plane_day.cumcount().astype(float)
    prev_delay = pd.Series(np.nan, index=legs.index)
    # Walk back over up to legs_back earlier legs: the latest one that had left by the cutoff.
    for back in range(legs_back, 0, -1):
        departed = same_plane_day["departed"].shift(back)
        delay = same_plane_day["delay"].shift(back)
        usable = departed.notna() & (departed <= legs["cutoff"])
        prev_delay = prev_delay.where(~usable, delay)
    out = pd.DataFrame({"plane_legs_before": before, "plane_prev_dep_delay": prev_delay})
    return out.reindex(f.index)


def build_rows(
    flights: pd.DataFrame, weather: pd.DataFrame, planes: pd.DataFrame, rules: RowRules
) -> pd.DataFrame:
    """One raw joined row per flight: its local `date`, the INPUT columns and the LABEL.

    No post-departure column (dep_time, dep_delay, arr_*, air_time) is an input of its
    own row; they enter only through other flights' known outcomes (HISTORY).
    """
    f = flights.reset_index(drop=True)
    wx = weather.drop_duplicates(["origin", "time_hour"]).set_index(["origin", "time_hour"])
    joined_wx = wx[WEATHER].reindex(pd.MultiIndex.from_arrays([f["origin"], f["time_hour"]]))
    plane = planes.drop_duplicates("tailnum").set_index("tailnum")
    joined_plane = plane.reindex(f["tailnum"]).rename(columns={"year": "plane_year"})
    out = pd.concat(
        [
            f[["year", "month", "day", "hour", "minute", "carrier", "flight", "origin", "dest",
               "tailnum", "distance"]],
            joined_wx.reset_index(drop=True),
            joined_plane[["plane_year", "manufacturer", "seats", "engines"]].reset_index(drop=True),
            history_features(f, rules),
        ],
        axis=1,
    )  # fmt: skip
    out.insert(0, "date", pd.to_datetime(f[["year", "month", "day"]]).dt.strftime("%Y-%m-%d"))
    out[LABEL] = label(f, rules.delay_minutes)
    return conform(out)[["date", *INPUT, LABEL]]


def complete(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with every INPUT column: an optional one it lacks is added empty (scored as
    missing, as featurize leaves it when unknown); lacking a required one is an error that
    names every such column."""
    absent = [c for c in INPUT if c not in rows.columns]
    if not absent:
        return rows
    required = [c for c in absent if not INPUT[c][1]]
    if required:
        raise ValueError(f"missing required column(s): {', '.join(required)}")
    return rows.assign(**{c: None for c in absent})


KINDS = {"long": "int64", "double": "float64", "string": "string"}


def conform(rows: pd.DataFrame) -> pd.DataFrame:
    """The INPUT columns in their declared types: the same frame whether it was built by
    featurize, read from Parquet or sent to the served model as JSON. A value that is not
    of its column's type is an error naming the column and the value."""
    rows = complete(rows)
    # Only the columns that need it: a single served row pays per conversion.
    changes = {c: KINDS[kind] for c, (kind, _) in INPUT.items() if rows[c].dtype != KINDS[kind]}
    if not changes:
        return rows
    try:
        return rows.astype(changes)
    except (ValueError, TypeError):
        raise ValueError(_first_bad_column(rows, changes)) from None


def _first_bad_column(rows: pd.DataFrame, changes: dict[str, str]) -> str:
    """Why `rows.astype(changes)` failed, as a person needs it: column, type, value."""
    for column, dtype in changes.items():
        try:
            rows[column].astype(dtype)
        except (ValueError, TypeError):
            kind = INPUT[column][0]
            for value in rows[column]:
                try:
                    pd.Series([value]).astype(dtype)
                except (ValueError, TypeError):
                    what = "null" if value is None or value != value else repr(value)
                    need = "a whole number" if kind == "long" else f"a {kind}"
                    empty = "" if INPUT[column][1] or what != "null" else ", and may not be empty"
                    return f"column {column}: {what} is not {need}{empty}"
    return "input rows: values not of their columns' types"


def model_inputs(rows: pd.DataFrame) -> pd.DataFrame:
    """The CATEGORICAL and NUMERIC features of raw joined rows."""
    return pd.DataFrame(
        {
            "carrier": rows["carrier"], "origin": rows["origin"], "dest": rows["dest"],
            "weekday": _weekday(rows).astype(str), "sched_hour": rows["hour"].astype(str),
            "manufacturer": rows["manufacturer"].astype("string"),
            "sched_minute_of_day": rows["hour"] * 60 + rows["minute"],
            "plane_age": rows["year"] - rows["plane_year"],
            **{c: rows[c] for c in PASSED_THROUGH},
        },
        index=rows.index,
    )[[*CATEGORICAL, *NUMERIC]]  # fmt: skip


def _weekday(rows: pd.DataFrame) -> np.ndarray:
    """Monday = 0, from year, month and day with integer date arithmetic (pd.to_datetime
    on columns costs about a millisecond per call, which a served row pays)."""
    month_start = (rows["year"].to_numpy() - 1970).astype("datetime64[Y]").astype(
        "datetime64[M]"
    ) + (rows["month"].to_numpy() - 1).astype("timedelta64[M]")
    day = month_start.astype("datetime64[D]") + (rows["day"].to_numpy() - 1).astype(
        "timedelta64[D]"
    )
    return (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday


def split_by_days(
    features: pd.DataFrame, test_days: int, valid_days: int, train_max_days: int | None
) -> dict[str, pd.DataFrame]:
    """The rows of each window (feature_store.choose_windows) of `features`."""
    chosen = choose_windows(list(features["date"].unique()), test_days, valid_days, train_max_days)
    return {
        name: features[features["date"].isin(days)].reset_index(drop=True)
        for name, days in chosen.items()
    }


def day_stats(rows: pd.DataFrame) -> DayStats:
    """What the encoders need of raw joined rows (one day's, as featurize keeps them)."""
    inputs = model_inputs(rows)
    return DayStats(
        rows=len(rows),
        positives=int(rows[LABEL].sum()) if LABEL in rows else 0,
        categories={c: {str(k): int(n) for k, n in
                        inputs[c].astype("string").value_counts(dropna=True).items()}
                    for c in CATEGORICAL},
        moments={c: Moments.of(inputs[c].to_numpy(dtype=np.float64, na_value=np.nan))
                 for c in NUMERIC},
    )  # fmt: skip


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
