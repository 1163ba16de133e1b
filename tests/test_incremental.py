"""The data steps redo only what changed, and give what a full rebuild gives, byte for byte."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tasks import collect, featurize, validate
from tasks.core.config import load_params
from tasks.core.io import read_json
from tasks.core.paths import Paths
from tests.factories import AIRPORTS, MiniProject, file_bytes, flight_rows

FIRST = dt.date(2013, 3, 1)
NOW = dt.datetime(2013, 3, 20, tzinfo=dt.UTC)
OUTPUTS = ("data/validated", "data/quarantine", "data/features")


def data_steps(project: MiniProject, now: dt.datetime = NOW, features: bool = True) -> None:
    paths = Paths.at(project.root)
    params = load_params(paths.params)
    collect.run(params.collect, paths)
    validate.run(params, paths, now=now)
    if features:
        featurize.run(params.featurize, paths, params.compute)


def outputs(project: MiniProject) -> dict[str, bytes]:
    found = {f"{d}/{k}": v for d in OUTPUTS for k, v in file_bytes(project.root / d).items()}
    return {**found, "report": (project.root / "reports/validation.json").read_bytes()}


def rebuilt_cold(project: MiniProject, now: dt.datetime = NOW, features: bool = True) -> dict:
    """The outputs of one run from nothing on the same raw data."""
    for folder in OUTPUTS:
        shutil.rmtree(project.root / folder, ignore_errors=True)
    paths = Paths.at(project.root)
    params = load_params(paths.params)
    validate.run(params, paths, now=now)
    if features:
        featurize.run(params.featurize, paths, params.compute)
    return outputs(project)


def inode(project: MiniProject, relative: str) -> int:
    return (project.root / relative).stat().st_ino


def small_windows(project: MiniProject) -> None:
    project.write_params(featurize={"test_days": 2, "valid_days": 2, "min_category_count": 1})


def test_incremental_days_give_the_bytes_of_one_cold_run(project: MiniProject) -> None:
    small_windows(project)
    project.add_days(FIRST, 5, per_day=6)
    data_steps(project)
    for i in range(5, 9):  # one new day per run, as the schedule brings them
        day = FIRST + dt.timedelta(days=i)
        old = ["data/validated/flights/2013-03-01.parquet",
               "data/features/days/2013-03-01.parquet"]  # fmt: skip
        before = {path: inode(project, path) for path in old}
        project.add_days(day, 1, per_day=6)
        data_steps(project)
        # The old day was reused, not rewritten: the same file, linked into the new version.
        assert {path: inode(project, path) for path in old} == before
        assert (project.root / f"data/features/days/{day}.parquet").exists()
    incremental = outputs(project)
    windows = read_json(project.root / "data/features/windows.json")
    assert windows["test"] == ["2013-03-08", "2013-03-09"]
    assert windows["train"][0] == "2013-03-01" and len(windows["train"]) == 5
    assert rebuilt_cold(project) == incremental


def test_a_changed_partition_is_checked_again(project: MiniProject) -> None:
    project.add_days(FIRST, 3)
    data_steps(project, features=False)
    untouched = inode(project, "data/validated/flights/2013-03-01.parquet")
    later = flight_rows(FIRST + dt.timedelta(days=1), 1, first_flight=500).assign(
        dest="XXX", updated_at=dt.datetime(2013, 3, 5)
    )
    project.add_flights(later)  # a late row for day 2: only day 2 is checked again
    data_steps(project, features=False)
    assert inode(project, "data/validated/flights/2013-03-01.parquet") == untouched
    bad = pd.read_parquet(project.root / "data/quarantine/flights/2013-03-02.parquet")
    assert bad["_reasons"].tolist() == ["dest: unknown airport code"]
    assert rebuilt_cold(project, features=False) == outputs(project)


def test_a_key_repeated_on_another_day_is_quarantined_on_both(project: MiniProject) -> None:
    project.add_days(FIRST, 2)
    data_steps(project, features=False)
    day_one = inode(project, "data/validated/flights/2013-03-01.parquet")
    # Day 3 brings a row with day 1's key (year, month, day, carrier, flight, origin).
    twin = flight_rows(FIRST + dt.timedelta(days=2), 1).assign(
        day=1, dep_delay=90.0, updated_at=dt.datetime(2013, 3, 4)
    )
    project.add_flights(twin)
    data_steps(project, features=False)
    reason = "duplicate key (year, month, day, carrier, flight, origin)"
    for day in ("2013-03-01", "2013-03-03"):
        bad = pd.read_parquet(project.root / f"data/quarantine/flights/{day}.parquet")
        assert bad["_reasons"].tolist() == [reason], day
    # Day 1's raw rows did not change, but it was checked again: its key now meets day 3's.
    assert inode(project, "data/validated/flights/2013-03-01.parquet") != day_one
    report = read_json(project.root / "reports/validation.json")["sources"]["flights"]
    assert report["reasons"] == {reason: 2} and report["rows_in"] == 9
    assert rebuilt_cold(project, features=False) == outputs(project)

    # A day later, days 1 and 3 are reused: their shared key is remembered, not lost.
    day_three = inode(project, "data/quarantine/flights/2013-03-03.parquet")
    project.add_days(FIRST + dt.timedelta(days=3), 1)
    data_steps(project, features=False)
    assert inode(project, "data/quarantine/flights/2013-03-03.parquet") == day_three
    report = read_json(project.root / "reports/validation.json")["sources"]["flights"]
    assert report["reasons"] == {reason: 2} and report["rows_in"] == 13
    assert rebuilt_cold(project, features=False) == outputs(project)


def test_a_changed_reference_file_checks_every_partition_that_uses_it(
    project: MiniProject,
) -> None:
    project.add_days(FIRST, 3)
    data_steps(project, features=False)
    weather_before = inode(project, "data/validated/weather/2013-03-01.parquet")
    # ORD leaves the airports file: flights to it are now unknown; weather (EWR, JFK and
    # LGA only) is checked again too, as it checks airport codes, and still passes.
    AIRPORTS[AIRPORTS["faa"] != "ORD"].to_csv(project.reference_dir / "airports.csv", index=False)
    data_steps(project, features=False)
    for day in ("2013-03-01", "2013-03-02", "2013-03-03"):
        bad = pd.read_parquet(project.root / f"data/quarantine/flights/{day}.parquet")
        assert set(bad["_reasons"]) == {"dest: unknown airport code"}, day
    assert inode(project, "data/validated/weather/2013-03-01.parquet") != weather_before
    assert rebuilt_cold(project, features=False) == outputs(project)


def test_rows_from_the_future_are_checked_again_once_their_time_came(
    project: MiniProject,
) -> None:
    project.write_params(validate={"max_reject_rate": 1.0, "extra_airport_codes": []})
    project.add_days(FIRST, 1)
    early = dt.datetime(2013, 2, 27, tzinfo=dt.UTC)  # a clock days behind the upstream's
    data_steps(project, now=early, features=False)
    report = read_json(project.root / "reports/validation.json")
    assert report["sources"]["flights"]["reasons"] == {"updated_at: in the future": 4}
    data_steps(project, features=False)  # NOW: the rows' time has come, nothing else changed
    report = read_json(project.root / "reports/validation.json")
    assert report["sources"]["flights"]["quarantined"] == 0
    assert rebuilt_cold(project, features=False) == outputs(project)


def test_a_damaged_ledger_means_a_full_check_not_an_error(project: MiniProject) -> None:
    project.add_days(FIRST, 2)
    data_steps(project, features=False)
    expected = outputs(project)
    ledger = project.root / "data/validated/flights/_ledger.json"
    ledger.write_text(ledger.read_text()[:40])
    data_steps(project, features=False)
    assert outputs(project) == expected


def damage(path: Path) -> None:
    """The file edited in place, as a stray tool or a bad disk would: its bytes change,
    its inode and name stay."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with path.open("r+b") as fh:
        fh.write(bytes(data))


def warnings_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    # Only these: an earlier test in the session may have let other INFO lines through.
    return [r for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


def test_a_damaged_validated_output_is_checked_again_not_carried_on(
    project: MiniProject, caplog: pytest.LogCaptureFixture
) -> None:
    project.add_days(FIRST, 3)
    project.add_flights(flight_rows(FIRST, 1, first_flight=700).assign(dest="XXX"))
    data_steps(project, features=False)
    expected = outputs(project)
    damaged = ["data/validated/flights/2013-03-02.parquet",
               "data/validated/flights/_keys/2013-03-03.npy"]  # fmt: skip
    for relative in damaged:
        damage(project.root / relative)
    (project.root / "data/quarantine/flights/2013-03-01.parquet").unlink()
    untouched = inode(project, "data/validated/weather/2013-03-02.parquet")
    with caplog.at_level(logging.WARNING, logger="tasks.data.ledger"):
        data_steps(project, features=False)
    # Each of the three days is checked again from its raw bytes; the rest is reused.
    warned = {r.getMessage().split(" is not")[0] for r in warnings_of(caplog, "tasks.data.ledger")}
    assert warned == {str(project.root / p) for p in [
        *damaged, "data/quarantine/flights/2013-03-01.parquet"]}  # fmt: skip
    assert inode(project, "data/validated/weather/2013-03-02.parquet") == untouched
    assert outputs(project) == expected


def test_a_damaged_feature_day_is_built_again_not_carried_on(
    project: MiniProject, caplog: pytest.LogCaptureFixture
) -> None:
    small_windows(project)
    project.add_days(FIRST, 6, per_day=6)
    data_steps(project)
    expected = outputs(project)
    rows = project.root / "data/features/days/2013-03-02.parquet"
    record = project.root / "data/features/days/2013-03-04.json"
    damage(rows)
    record.write_text(record.read_text()[:30])  # cut short, as a crash of a copy would
    untouched = inode(project, "data/features/days/2013-03-03.parquet")
    with caplog.at_level(logging.WARNING, logger="tasks.featurize"):
        data_steps(project)
    assert {r.getMessage() for r in warnings_of(caplog, "tasks.featurize")} == {
        f"{record} is damaged: the day is built again",
        f"{rows} is not the file featurize wrote: the day is built again",
    }
    assert inode(project, "data/features/days/2013-03-03.parquet") == untouched
    assert outputs(project) == expected


def test_days_built_together_or_alone_give_the_same_bytes(project: MiniProject) -> None:
    small_windows(project)
    project.add_days(FIRST, 6, per_day=6)
    # A flight dated the 3rd in the 4th's partition (its time_hour): bad data validate
    # lets through; built with the 3rd's flights it would meet them in its history.
    project.add_flights(flight_rows(FIRST + dt.timedelta(days=3), 1, first_flight=900)
                        .assign(day=3))  # fmt: skip
    data_steps(project)
    together = outputs(project)
    project.write_params(featurize={"test_days": 2, "valid_days": 2, "min_category_count": 1,
                                    "batch_rows": 1})  # fmt: skip
    assert rebuilt_cold(project) == together
