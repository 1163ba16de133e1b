"""The served model's contract at its edges, on the pure parts (a real server and model:
tests/release/test_release.py::test_served_champion_and_predict_match_the_pyfunc)."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.ml import columns
from tasks.ml.features import conform
from tasks.release.serving import BadRequest, check_values, unknown_codes

EXAMPLE = dict(zip(columns.EXAMPLE_COLUMNS, columns.EXAMPLE_ROW, strict=True))


def rows(*changes: dict) -> pd.DataFrame:
    return conform(pd.DataFrame([{**EXAMPLE, **change} for change in changes]))


@pytest.mark.parametrize(("change", "message"), [
    ({"month": 13}, "column month: 13 (row 1) is out of range [1, 12]"),
    ({"day": 45}, "column day: 45 (row 1) is out of range [1, 31]"),
    ({"hour": 27}, "column hour: 27 (row 1) is out of range [0, 23]"),
    ({"distance": -5.0}, "column distance: -5.0 (row 1) is out of range [1, 10000]"),
    ({"carrier": None}, "column carrier: row 1 is empty, and the column is required"),
    ({"month": 2, "day": 30}, "row 1: 2013-02-30 (year, month, day) is not a date"),
])  # fmt: skip
def test_values_no_flight_can_have_are_named(change: dict, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_values(rows({}, change))
    assert str(err.value) == message


def test_a_valid_row_passes_and_optional_columns_may_be_empty() -> None:
    check_values(rows({}, {"tailnum": None, "temp": None}))


def test_codes_the_model_never_trained_on_are_listed_per_row() -> None:
    known = {"carrier": {"UA", "AA"}, "origin": {"EWR", "JFK"}, "dest": {"IAH"}}
    found = unknown_codes(rows({}, {"origin": "LAX", "carrier": "ZZ"}), known)
    assert found == [[], ["carrier: ZZ", "origin: LAX"]]
