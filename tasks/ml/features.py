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

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.ml.columns import HISTORY, INPUT, WEATHER
from tasks.ml.feature_store import DayStats, Moments, choose_windows

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
