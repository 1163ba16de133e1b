"""Validate: the bad-input corpus, thresholds, schema changes, nothing half-written."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks import collect, validate
from tasks.core.config import load_params
from tasks.core.errors import SourceError, StepError
from tasks.core.io import read_json
from tasks.core.paths import Paths
from tests.factories import ROOT, MiniProject, file_bytes, flight_rows, weather_rows

DAY = dt.date(2013, 3, 1)
NOW = dt.datetime(2013, 3, 10, tzinfo=dt.UTC)


def pipeline(project: MiniProject) -> dict:
    paths = Paths.at(project.root)
    params = load_params(paths.params)
    collect.run(params.collect, paths)
    return validate.run(params, paths, now=NOW)


def quarantine(project: MiniProject, source: str) -> pd.DataFrame:
    parts = sorted((project.root / "data/quarantine" / source).glob("*.parquet"))
    return (
        pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        if parts
        else pd.DataFrame()
    )


def flights_with(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[MiniProject], None]:
    def setup(project: MiniProject) -> None:
        project.add_flights(change(flight_rows(DAY, 6)))
        project.drop_weather(DAY)

    return setup


def weather_with(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[MiniProject], None]:
    def setup(project: MiniProject) -> None:
        project.add_flights(flight_rows(DAY, 6))
        project.drop_weather(DAY, change(weather_rows(DAY)))

    return setup


def set_cell(column: str, value, row: int = 0) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object})
        frame.loc[row, column] = value
        return frame

    return change


def duplicate_key(frame: pd.DataFrame) -> pd.DataFrame:
    twin = frame.iloc[[0]].copy()
    twin["dep_delay"] = 120.0  # same key, same updated_at, other content
    return pd.concat([frame, twin], ignore_index=True)


def truncated_csv(project: MiniProject) -> None:
    project.add_flights(flight_rows(DAY, 6))
    path = project.drop_weather(DAY)
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 20])  # cut inside the last row


ROW_CORPUS = {
    # kind of broken row: (setup, source, expected reason)
    "wrong type in SQL": (flights_with(set_cell("dep_delay", "late")), "flights", "dep_delay: not a number"),
    "wrong type in CSV": (weather_with(set_cell("temp", "warm")), "weather", "temp: not a number"),
    "not an integer": (flights_with(set_cell("flight", 12.5)), "flights", "flight: not an integer"),
    "null in required field": (flights_with(set_cell("carrier", None)), "flights", "carrier: missing value"),
    "out of range": (flights_with(set_cell("month", 13)), "flights", "month: out of range [1, 12]"),
    "duplicate key": (flights_with(duplicate_key), "flights",
                      "duplicate key (year, month, day, carrier, flight, origin)"),
    "unknown airport": (flights_with(set_cell("dest", "XXX")), "flights", "dest: unknown airport code"),
    "unknown carrier": (flights_with(set_cell("carrier", "ZZ")), "flights", "carrier: unknown carrier"),
    "recorded in the future": (flights_with(set_cell("updated_at", dt.datetime(2099, 1, 1))),
                               "flights", "updated_at: in the future"),
    "happened after it was recorded": (flights_with(set_cell("time_hour", dt.datetime(2013, 3, 5))),
                                       "flights", "time_hour: after updated_at"),
    "malformed date": (weather_with(set_cell("time_hour", "2013-13-45T99:00")), "weather",
                       "time_hour: not a timestamp"),
    "truncated CSV": (truncated_csv, "weather", "missing value"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(ROW_CORPUS))
def test_broken_rows_are_quarantined_with_their_reason(project: MiniProject, kind: str) -> None:
    setup, source, reason = ROW_CORPUS[kind]
    setup(project)
    report = pipeline(project)[source]
    bad = quarantine(project, source)
    assert len(bad) >= 1 and report["quarantined"] == len(bad)
    assert all(any(reason in r for r in reasons.split("; ")) for reasons in bad["_reasons"])
    assert any(reason in r for r in report["reasons"])
    assert report["rows_out"] == report["rows_in"] - len(bad)
    good = pd.concat(
        pd.read_parquet(p) for p in (project.root / "data/validated" / source).glob("*.parquet")
    )
    assert len(good) == report["rows_out"]


def test_every_failure_of_a_row_is_found_in_one_pass(project: MiniProject) -> None:
    flights_with(lambda f: set_cell("dest", "XXX")(set_cell("month", 13)(f)))(project)
    pipeline(project)
    assert quarantine(project, "flights")["_reasons"].tolist() == [
        "dest: unknown airport code; month: out of range [1, 12]"
    ]


def test_valid_rows_are_typed(project: MiniProject) -> None:
    project.add_days(DAY, 1)
    pipeline(project)
    rows = pd.read_parquet(project.root / "data/validated/flights/2013-03-01.parquet")
    assert str(rows["flight"].dtype) == "Int64"
    assert (
        str(rows["time_hour"].dtype).startswith("datetime64")
        and rows["time_hour"].dt.tz is not None
    )
    weather = pd.read_parquet(project.root / "data/validated/weather/2013-03-01.parquet")
    assert weather["temp"].iloc[0] == pytest.approx(39.02)
    report = read_json(project.root / "reports/validation.json")
    assert report["total"] == {"rows_in": 4 + 72 + 5 + 3 + 2, "rows_out": 86, "quarantined": 0}


# --- clear errors -------------------------------------------------------------------------


def renamed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"temp": "temperature"})


FILE_CORPUS = {
    "missing column": (lambda f: f.drop(columns=["humid"]), "weather: schema changed in 1 file(s): weather_2013-03-01.csv: column(s) 'humid' missing"),
    "extra column": (lambda f: f.assign(snow="0"), "weather: schema changed in 1 file(s): weather_2013-03-01.csv: unexpected column(s) 'snow'"),
    "renamed column": (renamed, "column(s) 'temp' missing and 'temperature' new (renamed?)"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(FILE_CORPUS))
def test_changed_columns_fail_naming_the_column(project: MiniProject, kind: str) -> None:
    change, message = FILE_CORPUS[kind]
    weather_with(change)(project)
    with pytest.raises(
        StepError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
    ):
        pipeline(project)


def test_column_of_another_type_fails_naming_it(project: MiniProject) -> None:
    project.drop_weather(DAY)
    with project.engine.begin() as conn:  # the upstream changed a column's type
        conn.execute(sa.text(f"ALTER TABLE {project.table} DROP COLUMN carrier"))
        conn.execute(sa.text(f"ALTER TABLE {project.table} ADD COLUMN carrier TIMESTAMP"))
    rows = flight_rows(DAY, 3).assign(carrier=dt.datetime(2013, 1, 1))
    project.add_flights(rows)
    with pytest.raises(
        StepError, match="flights: schema changed: column 'carrier' is now datetime64"
    ):
        pipeline(project)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "weather: weather_2013-03-01.csv is empty"),
        (b"origin,temp\nEWR,\xff\xfe\n", "weather: weather_2013-03-01.csv is not UTF-8 text"),
    ],
)
def test_unreadable_files_stop_collection_with_the_file_named(
    project: MiniProject, content, message
) -> None:
    project.add_flights(flight_rows(DAY, 2))
    (project.weather_dir / "weather_2013-03-01.csv").write_bytes(content)
    with pytest.raises(SourceError, match=message):
        pipeline(project)


def test_truncated_parquet_in_a_drop_folder(project: MiniProject) -> None:
    sources = project.sources()
    sources["weather"]["glob"] = "weather_*"
    project.write_params(sources)
    path = project.weather_dir / "weather_2013-03-01.parquet"
    weather_rows(DAY).to_parquet(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(
        SourceError, match="weather_2013-03-01.parquet is not a readable Parquet file"
    ):
        pipeline(project)


def test_reject_rate_above_threshold_fails_and_keeps_the_previous_version(
    project: MiniProject,
) -> None:
    project.write_params(validate={"max_reject_rate": 0.1, "extra_airport_codes": []})
    project.add_days(DAY, 1)
    pipeline(project)
    before = {d: file_bytes(project.root / "data" / d) for d in ("validated", "quarantine")}
    report_before = (project.root / "reports/validation.json").read_bytes()

    project.add_flights(flight_rows(DAY + dt.timedelta(days=1), 4).assign(dest="XXX"))
    with pytest.raises(StepError) as err:
        pipeline(project)
    assert str(err.value) == (
        "flights: 50.00% of 8 rows rejected, above validate.max_reject_rate = 10.00%; "
        "top reasons: dest: unknown airport code (4)"
    )
    after = {d: file_bytes(project.root / "data" / d) for d in ("validated", "quarantine")}
    assert after == before
    assert (project.root / "reports/validation.json").read_bytes() == report_before
    assert not (project.root / "data/.validate.staging").exists()


def test_the_watermark_column_is_the_sources_setting_not_the_schemas(tmp_path) -> None:
    """A user's flights table with no `updated_at`, collected by `watermark: time_hour`:
    every row is valid, and the record time checked is the watermark's."""
    project = MiniProject(tmp_path)
    rows = flight_rows(DAY, 6).drop(columns=["updated_at"])
    with project.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE flights"))
    project.add_flights(rows)
    sources = project.sources()
    sources["flights"]["watermark"] = "time_hour"
    project.write_params(sources)
    project.drop_weather(DAY)
    report = pipeline(project)["flights"]
    assert report["rows_out"] == 6 and report["quarantined"] == 0, report

    future = rows.assign(time_hour=dt.datetime(2099, 1, 1), flight=rows["flight"] + 50)
    project.add_flights(future.iloc[[0]])
    report = pipeline(project)["flights"]
    assert report["rows_out"] == 6 and report["quarantined"] == 1, report
    assert quarantine(project, "flights")["_reasons"].tolist() == ["time_hour: in the future"]


def test_rows_from_the_future_make_validate_due_on_every_run_until_their_time(
    project: MiniProject,
) -> None:
    """DVC skips validate when data/raw did not change; rows quarantined as "in the future"
    (a clock that was behind) must still be checked again, on every run, until their time
    has come. Collect (run every time) names them in data/rechecks.json, validate's input,
    which then changes on every run while any wait."""
    import yaml

    from tasks.core.io import read_json

    paths = Paths.at(project.root)
    params = load_params(paths.params)
    # Rows are stamped at local midnight after their day (05:00 UTC next day); the clock
    # behind at the start of March 2 (UTC) sees March 2's rows more than a day ahead.
    project.add_flights(flight_rows(DAY, 6))
    project.add_flights(flight_rows(DAY + dt.timedelta(days=1), 2, first_flight=50))
    project.drop_weather(DAY)
    collect.run(params.collect, paths)
    assert read_json(paths.rechecks) == {"pending": [], "asked": None}
    behind = dt.datetime(2013, 3, 2, tzinfo=dt.UTC)
    report = validate.run(params, paths, now=behind)
    assert report["flights"]["quarantined"] == 2

    collect.run(params.collect, paths)  # no new data
    first = read_json(paths.rechecks)
    assert first["pending"] == ["flights/2013-03-02.parquet"] and first["asked"]
    collect.run(params.collect, paths)  # and again: changed, so DVC runs validate again
    again = read_json(paths.rechecks)
    assert again["pending"] == first["pending"] and again["asked"] > first["asked"]

    report = validate.run(params, paths, now=NOW)  # the clock right again
    assert report["flights"]["quarantined"] == 0 and report["flights"]["rows_out"] == 8
    collect.run(params.collect, paths)
    assert read_json(paths.rechecks) == {"pending": [], "asked": None}  # DVC may skip again

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "data/rechecks.json" in stages["validate"]["deps"]
    assert {"data/rechecks.json": {"cache": False}} in stages["collect"]["outs"]
