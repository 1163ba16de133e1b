"""Features on hand-built rows: joins, no leakage, the history gap, the split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.core.config import load_params
from tasks.featurize import row_rules
from tasks.ml.encoders import Encoders
from tasks.ml.features import (
    CATEGORICAL,
    INPUT,
    LABEL,
    NUMERIC,
    build_rows,
    conform,
    history_features,
    model_inputs,
    outcome_known_at,
    split_by_days,
)
from tasks.ml.inference import plain_rows
from tests.factories import ROOT, joined_rows

RULES = row_rules(load_params(ROOT / "params.yaml").featurize)  # 15-minute label, 30-minute gap


def flights(rows: list[dict]) -> pd.DataFrame:
    base = {"year": 2013, "month": 3, "day": 1, "minute": 0, "carrier": "AA", "origin": "EWR",
            "dest": "ATL", "tailnum": None, "distance": 700.0}  # fmt: skip
    frame = pd.DataFrame([{**base, "flight": i + 1, **r} for i, r in enumerate(rows)])
    local = pd.to_datetime(frame[["year", "month", "day", "hour"]]).dt.tz_localize(
        "America/New_York"
    )
    frame["time_hour"] = local.dt.tz_convert("UTC")
    for col in ("dep_time", "arr_time", "arr_delay", "air_time"):
        frame[col] = frame.get(col, np.nan)
    return frame


WEATHER = pd.DataFrame({
    "origin": ["EWR", "EWR", "JFK"],
    "time_hour": pd.to_datetime(["2013-03-01 13:00", "2013-03-01 14:00", "2013-03-01 13:00"], utc=True),
    **{c: [1.0, 2.0, 3.0] for c in ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust",
                                     "precip", "pressure", "visib")},
})  # fmt: skip
PLANES = pd.DataFrame({"tailnum": ["N1"], "year": [2003], "manufacturer": ["BOEING"], "seats": [150],
                       "engines": [2]})  # fmt: skip


def test_joins_weather_at_the_scheduled_hour_and_the_plane() -> None:
    f = flights([{"hour": 8, "dep_delay": 0.0, "tailnum": "N1"}, {"hour": 9, "dep_delay": 0.0}])
    out = build_rows(f, WEATHER, PLANES, RULES)
    # 08:00 EST is 13:00 UTC: the first EWR row; 09:00 -> 14:00 UTC: the second.
    assert out["temp"].tolist() == [1.0, 2.0]
    age = model_inputs(out)["plane_age"].tolist()
    assert age[0] == 10 and np.isnan(age[1])
    assert out.loc[0, "manufacturer"] == "BOEING" and out.loc[0, "seats"] == 150
    assert list(out.columns[-1:]) == [LABEL]


def test_label_is_delayed_15_or_cancelled() -> None:
    f = flights(
        [
            {"hour": 8, "dep_delay": 14.0},
            {"hour": 8, "dep_delay": 15.0},
            {"hour": 8, "dep_delay": np.nan},
        ]
    )
    assert build_rows(f, WEATHER, PLANES, RULES)[LABEL].tolist() == [0, 1, 1]


def test_own_post_departure_columns_never_change_own_features() -> None:
    rows = [
        {"hour": h, "dep_delay": d, "tailnum": "N1"} for h, d in [(6, 40.0), (8, -20.0), (10, 5.0)]
    ]
    base = build_rows(flights(rows), WEATHER, PLANES, RULES)
    for change in ({"dep_delay": 300.0}, {"dep_delay": -45.0}, {"dep_delay": np.nan},
                   {"dep_time": 1234.0, "arr_time": 99.0, "arr_delay": 500.0, "air_time": 1.0}):  # fmt: skip
        changed = flights([{**rows[1], **change} if i == 1 else r for i, r in enumerate(rows)])
        out = build_rows(changed, WEATHER, PLANES, RULES)
        pd.testing.assert_frame_equal(out.loc[[1], list(INPUT)], base.loc[[1], list(INPUT)])
        pd.testing.assert_frame_equal(model_inputs(out).loc[[1]], model_inputs(base).loc[[1]])


def test_history_uses_only_outcomes_known_a_gap_before() -> None:
    # Flight 0 leaves 06:00 sharp: known at 360 min. Flight 1 is scheduled 06:30 (cutoff 360
    # with a 30 min gap): it sees flight 0. Flight 2 at 06:29 (cutoff 359) does not.
    f = flights([{"hour": 6, "dep_delay": 0.0}, {"hour": 6, "minute": 30, "dep_delay": 0.0},
                 {"hour": 6, "minute": 29, "dep_delay": 0.0}])  # fmt: skip
    hist = history_features(f, RULES)
    assert hist["origin_known_flights"].tolist() == [0, 1, 0]


def test_early_departure_does_not_count_itself() -> None:
    f = flights([{"hour": 9, "dep_delay": -43.0}])  # left 43 min early: known before its own cutoff
    assert outcome_known_at(f, RULES.delay_minutes).tolist() == [9 * 60 - 43]
    assert history_features(f, RULES)["origin_known_flights"].tolist() == [0]


def test_cancelled_flight_is_known_15_minutes_after_its_slot() -> None:
    f = flights([{"hour": 6, "dep_delay": np.nan}, {"hour": 7, "dep_delay": 0.0}])
    assert outcome_known_at(f, RULES.delay_minutes).tolist() == [375, 420]
    hist = history_features(f, RULES)
    assert hist.loc[1, "origin_known_delay_rate"] == 1.0  # the cancellation, known at 06:15


def test_plane_previous_leg_only_once_it_left() -> None:
    f = flights([{"hour": 6, "dep_delay": 50.0, "tailnum": "N1"}, {"hour": 7, "dep_delay": 0.0, "tailnum": "N1"},
                 {"hour": 9, "dep_delay": 0.0, "tailnum": "N1"}])  # fmt: skip
    hist = history_features(f, RULES)
    # Leg 1 (07:00, cutoff 06:30): leg 0 left at 06:50, too late to know. Leg 2 sees leg 1.
    assert (
        np.isnan(hist.loc[1, "plane_prev_dep_delay"]) and hist.loc[2, "plane_prev_dep_delay"] == 0.0
    )
    assert hist["plane_legs_before"].tolist() == [0, 1, 2]


def test_split_boundaries() -> None:
    days = [f"2013-03-{d:02d}" for d in range(1, 11)]
    frame = pd.DataFrame({"date": np.repeat(days, 2), LABEL: 0})
    parts = split_by_days(frame, test_days=2, valid_days=3, train_max_days=4)
    assert sorted(parts["test"]["date"].unique()) == days[8:]
    assert sorted(parts["valid"]["date"].unique()) == days[5:8]
    assert sorted(parts["train"]["date"].unique()) == days[1:5]  # the newest 4 of the rest
    with pytest.raises(ValueError, match="10 days of data"):
        split_by_days(frame, test_days=8, valid_days=3, train_max_days=None)


def test_encoders_are_fitted_on_train_only_and_round_trip() -> None:
    f = flights([{"hour": 8 + i % 3, "dep_delay": 0.0, "carrier": c} for i, c in enumerate("AAB")])
    train = build_rows(f, WEATHER, PLANES, RULES)
    enc = Encoders.fit(train)
    assert enc.vocab["carrier"] == ["A", "B"]
    other = train.assign(carrier="Z", distance=np.nan)
    codes, numeric = enc.transform(other)
    assert (codes[:, CATEGORICAL.index("carrier")] == 0).all()  # unseen -> 'unknown'
    assert (
        numeric.shape == (3, 2 * len(NUMERIC))
        and numeric[:, len(NUMERIC) + NUMERIC.index("distance")].all()
    )
    again = Encoders.from_json(enc.to_json())
    assert np.array_equal(again.transform(train)[1], enc.transform(train)[1])


def test_a_few_rows_are_encoded_bit_for_bit_as_in_a_batch() -> None:
    """The served path (a few rows, no pandas per column) against the batch path, on rows
    with missing values, unseen categories and the types JSON brings (objects, None)."""
    from tasks.ml.encoders import FEW_ROWS

    rows = joined_rows(["2013-03-01", "2013-03-02"], per_day=40, seed=3)
    enc = Encoders.fit(rows.iloc[:50], min_count=3)
    rng = np.random.default_rng(0)
    for column in ("temp", "plane_year", "seats", "origin_known_delay_rate"):
        rows.loc[rng.random(len(rows)) < 0.2, column] = np.nan
    rows.loc[rows.index[::7], "manufacturer"] = None
    rows.loc[rows.index[::5], "carrier"] = "ZZ"  # never seen in train
    codes, numeric = enc.transform(rows)
    assert len(rows) > FEW_ROWS  # the batch path above, the few-rows path below
    for frame in (rows, plain_rows(rows)):
        for start in range(0, len(rows), 3):
            few = frame.iloc[start : start + 3]
            got_codes, got_numeric = enc.transform(few)
            assert np.array_equal(got_codes, codes[start : start + 3])
            assert got_numeric.tobytes() == numeric[start : start + 3].tobytes()
    for few in (1, FEW_ROWS + 1):  # both paths
        with pytest.raises(ValueError, match="^missing required column.s.: year, distance$"):
            enc.transform(rows.drop(columns=["distance", "year"]).iloc[:few])
        # The optional columns may be left out: scored as missing, as when sent empty.
        optional = [c for c, (_, optional) in INPUT.items() if optional]
        left_out = enc.transform(rows.drop(columns=optional).iloc[:few])
        sent_empty = enc.transform(rows.assign(**{c: None for c in optional}).iloc[:few])
        assert all(np.array_equal(a, b) for a, b in zip(left_out, sent_empty, strict=True))


def test_a_value_of_the_wrong_type_is_named_with_its_column() -> None:
    rows = plain_rows(joined_rows(["2013-03-01"], per_day=3, seed=0))
    with pytest.raises(ValueError, match="^column distance: 'far' is not a double$"):
        conform(rows.assign(distance=["far", 1.0, 2.0]))
    with pytest.raises(ValueError, match="^column hour: null is not a whole number, and may"):
        conform(rows.assign(hour=[None, 5, 6]))
    with pytest.raises(ValueError, match="^column hour: '5am' is not a whole number$"):
        conform(rows.assign(hour=["5am", 5, 6]))
