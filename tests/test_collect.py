"""Collect: day partitions, idempotency, late rows, the watermark rule, crashes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks import collect
from tasks.core.config import load_params
from tasks.core.errors import SourceError
from tasks.core.io import read_json
from tasks.core.paths import Paths
from tasks.data import partitions
from tests.factories import (
    ROOT,
    MiniProject,
    env_for,
    file_bytes,
    flight_rows,
    small_disk,
    weather_rows,
)

DAY = dt.date(2013, 3, 1)
KEY = ["k"]


def run(project: MiniProject) -> dict:
    paths = Paths.at(project.root)
    return collect.run(load_params(paths.params).collect, paths)


# --- pure steps ---------------------------------------------------------------------------


def test_partition_days_are_local_calendar_days() -> None:
    frame = pd.DataFrame({"t": ["2013-03-01T04:59:00Z", "2013-03-01T05:00:00Z", "garbage", None]})
    days = partitions.partition_days(frame, "t", "America/New_York")
    assert list(days) == ["2013-02-28", "2013-03-01", "unknown-day", "unknown-day"]
    assert set(partitions.partition_days(frame, None, "UTC")) == {"snapshot"}


def test_merge_drops_rereads_and_keeps_the_newest_version() -> None:
    old = pd.DataFrame({"k": [1, 2], "v": ["a", "b"], "w": [1, 1]})
    new = pd.DataFrame({"k": [2, 2, 3], "v": ["b", "B", "c"], "w": [1, 2, 2]})
    merged = partitions.merge_rows(old, new, KEY, "w")
    assert merged.to_dict("records") == [
        {"k": 1, "v": "a", "w": 1}, {"k": 2, "v": "B", "w": 2}, {"k": 3, "v": "c", "w": 2},
    ]  # fmt: skip
    assert partitions.merge_rows(merged, new, KEY, "w").equals(merged)  # idempotent


def test_merge_keeps_conflicting_versions_for_validate_to_reject() -> None:
    new = pd.DataFrame({"k": [1, 1], "v": ["x", "y"], "w": [5, 5]})
    merged = partitions.merge_rows(None, new, KEY, "w")
    assert sorted(merged["v"]) == ["x", "y"]
    shuffled = partitions.merge_rows(None, new.iloc[::-1], KEY, "w")
    assert shuffled.equals(merged)  # the order does not depend on arrival


def test_watermark_helpers() -> None:
    stamps = pd.Series(["2013-03-02T05:00:00Z", "2013-03-01T05:00:00Z", None])
    assert partitions.max_watermark(stamps) == "2013-03-02T05:00:00+00:00"
    assert partitions.max_watermark(pd.Series([3, 7, None])) == 7
    assert partitions.later_watermark(None, "2013-01-01T00:00:00Z") == "2013-01-01T00:00:00Z"
    assert partitions.later_watermark("2013-01-02T00:00:00+00:00", "2013-01-01T23:00:00-05:00") == (
        "2013-01-01T23:00:00-05:00"
    )


# --- a mini project -----------------------------------------------------------------------


def test_collects_each_source_into_day_partitions(project: MiniProject) -> None:
    project.add_days(DAY, 2)
    manifest = run(project)
    flights = manifest["sources"]["flights"]
    assert flights["rows"] == 8
    assert flights["watermark"] == "2013-03-03T05:00:00+00:00"
    assert sorted(flights["partitions"]) == ["2013-03-01.parquet", "2013-03-02.parquet"]
    part = project.root / "data/raw/flights/2013-03-01.parquet"
    assert flights["partitions"][part.name]["rows"] == len(pd.read_parquet(part)) == 4
    assert manifest["sources"]["weather"]["rows"] == 144
    assert manifest["sources"]["airports"]["partitions"] == {
        "snapshot.parquet": manifest["sources"]["airports"]["partitions"]["snapshot.parquet"]
    }
    assert set(manifest["sources"]["weather"]["files_seen"]) == {
        "weather_2013-03-01.csv", "weather_2013-03-02.csv"
    }  # fmt: skip


def test_collecting_twice_gives_identical_bytes(project: MiniProject) -> None:
    project.add_days(DAY, 3)
    run(project)
    first = file_bytes(project.root / "data/raw")
    mtimes = {p: p.stat().st_mtime_ns for p in (project.root / "data/raw").rglob("*.parquet")}
    run(project)
    assert file_bytes(project.root / "data/raw") == first
    # Unchanged partitions are not even rewritten (DVC need not rehash them).
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_new_day_adds_one_partition_and_leaves_the_others(project: MiniProject) -> None:
    project.add_days(DAY, 2)
    run(project)
    before = file_bytes(project.root / "data/raw/flights")
    project.add_days(DAY + dt.timedelta(days=2), 1)
    run(project)
    after = file_bytes(project.root / "data/raw/flights")
    assert set(after) - set(before) == {"2013-03-03.parquet"}
    assert {k: after[k] for k in before} == before


def test_late_rows_rewrite_their_day_deterministically(tmp_path: Path) -> None:
    def build(root: Path, late_first: bool) -> dict[str, bytes]:
        project = MiniProject(root)
        on_time, late = flight_rows(DAY, 4), flight_rows(DAY, 2, first_flight=50)
        late["updated_at"] = late["updated_at"] + pd.Timedelta(days=3)  # arrived days later
        if late_first:  # the same rows, all in one pull
            project.add_flights(pd.concat([on_time, late]))
            run(project)
        else:
            project.add_flights(on_time)
            run(project)
            project.add_flights(late)
            run(project)
        return file_bytes(root / "data/raw/flights")

    incremental = build(tmp_path / "a", late_first=False)
    at_once = build(tmp_path / "b", late_first=True)
    assert list(incremental) == ["2013-03-01.parquet"]
    assert incremental == at_once
    assert len(pd.read_parquet(tmp_path / "a/data/raw/flights/2013-03-01.parquet")) == 6


def test_partition_bytes_do_not_depend_on_chunking(tmp_path: Path) -> None:
    """An integer column with a NULL in one chunk, an all-NULL column in another: the
    declared types keep every day's bytes the same however the pull was chunked."""

    def build(root: Path, chunk_rows: int) -> dict[str, bytes]:
        project = MiniProject(root)
        rows = pd.concat(
            [flight_rows(DAY + dt.timedelta(days=i), 5) for i in range(4)], ignore_index=True
        )
        rows = rows.astype({"sched_arr_time": object, "tailnum": object})
        rows.loc[0, "sched_arr_time"] = None  # NULL in an INTEGER column, first chunk only
        rows.loc[5:, "tailnum"] = None
        project.add_flights(rows)
        params = (
            (root / "params.yaml")
            .read_text()
            .replace("chunk_rows: 1000", f"chunk_rows: {chunk_rows}")
        )
        (root / "params.yaml").write_text(params)
        run(project)
        return file_bytes(root / "data/raw/flights")

    one_chunk, small_chunks = build(tmp_path / "a", 1000), build(tmp_path / "b", 3)
    assert one_chunk == small_chunks
    day2 = pd.read_parquet(tmp_path / "b/data/raw/flights/2013-03-02.parquet")
    assert str(day2["sched_arr_time"].dtype) == "Int64" and str(day2["tailnum"].dtype) == "str"


def test_updated_row_replaces_the_old_version(project: MiniProject) -> None:
    rows = flight_rows(DAY, 2)
    project.add_flights(rows)
    run(project)
    fix = rows.iloc[[0]].copy()
    fix["dep_delay"], fix["updated_at"] = 99.0, fix["updated_at"] + pd.Timedelta(hours=1)
    project.add_flights(fix)
    run(project)
    part = pd.read_parquet(project.root / "data/raw/flights/2013-03-01.parquet")
    assert len(part) == 2 and sorted(part["dep_delay"]) == [6.0, 99.0]


def test_watermark_does_not_move_past_unwritten_data(project: MiniProject, monkeypatch) -> None:
    project.add_days(DAY, 2)
    run(project)
    before = read_json(project.root / "data/raw/manifest.json")
    project.add_days(DAY + dt.timedelta(days=2), 2)

    def fail_while_writing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(collect.Merge, "days", fail_while_writing)
    with pytest.raises(OSError, match="disk full"):
        run(project)
    assert read_json(project.root / "data/raw/manifest.json") == before
    monkeypatch.undo()
    assert run(project)["sources"]["flights"]["watermark"] == "2013-03-05T05:00:00+00:00"


def test_a_failing_source_keeps_the_progress_of_those_before_it(project: MiniProject) -> None:
    project.add_days(DAY, 1)
    (project.weather_dir / "weather_2013-03-02.csv").write_bytes(b"")
    with pytest.raises(SourceError, match="weather: weather_2013-03-02.csv is empty"):
        run(project)
    manifest = read_json(project.root / "data/raw/manifest.json")
    assert manifest["sources"]["flights"]["rows"] == 4  # collected before weather failed
    assert "weather" not in manifest["sources"]
    assert not (project.root / "data/raw/weather").exists()


def test_bad_file_can_be_skipped_and_is_retried(project: MiniProject) -> None:
    sources = project.sources()
    sources["weather"]["on_bad_file"] = "skip"
    project.write_params(sources)
    project.drop_weather(DAY)
    bad = project.weather_dir / "weather_2013-03-02.csv"
    bad.write_bytes(b"")
    weather = run(project)["sources"]["weather"]
    assert weather["rows"] == 72
    assert "is empty" in weather["skipped_files"]["weather_2013-03-02.csv"]
    assert "weather_2013-03-02.csv" not in weather["files_seen"]
    project.drop_weather(DAY + dt.timedelta(days=1))  # the upload completes
    weather = run(project)["sources"]["weather"]
    assert weather["rows"] == 144 and weather["skipped_files"] == {}


def test_a_header_only_file_adds_nothing_is_seen_and_is_said(
    project: MiniProject, caplog: pytest.LogCaptureFixture
) -> None:
    project.drop_weather(DAY)
    project.drop_weather(
        DAY + dt.timedelta(days=1), weather_rows(DAY).iloc[0:0]
    )  # no rows that day, as the real data has none for 2013-12-31
    with caplog.at_level("WARNING", logger="tasks.collect"):
        weather = run(project)["sources"]["weather"]
    assert weather["rows"] == 72 and list(weather["partitions"]) == ["2013-03-01.parquet"]
    assert "weather_2013-03-02.csv" in weather["files_seen"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [
        "weather: weather_2013-03-02.csv has a header and no rows: no data for 2013-03-02 from it"
    ]


def test_unknown_source_name(project: MiniProject) -> None:
    paths = Paths.at(project.root)
    with pytest.raises(SourceError, match="no enabled source named nope"):
        collect.run(load_params(paths.params).collect, paths, only=["nope"])


# --- crashes ------------------------------------------------------------------------------


def collect_process(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tasks.collect"], cwd=root, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
def test_killed_midway_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    days, per_day = 40, 300

    def build(root: Path) -> MiniProject:
        project = MiniProject(root)
        for i in range(days):
            project.add_flights(flight_rows(DAY + dt.timedelta(days=i), per_day))
        return project

    clean = build(tmp_path / "clean")
    assert collect_process(clean.root).wait(timeout=300) == 0

    crashed = build(tmp_path / "crashed")
    proc = collect_process(crashed.root)
    out = crashed.root / "data/raw/flights"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*.parquet"))) < 5:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list(out.glob("*.parquet")))
    manifest = read_json(crashed.root / "data/raw/manifest.json", default={"sources": {}})
    assert 5 <= written < days, "the kill should land while partitions are being written"
    assert "flights" not in manifest["sources"], "the watermark moved before all data was written"

    # A kill during a partition write leaves its temporary file: the rerun must clear it.
    (out / ".2013-03-07.parquet.killed.tmp").write_bytes(b"PAR1 cut short")
    assert collect_process(crashed.root).wait(timeout=300) == 0
    assert file_bytes(crashed.root / "data/raw") == file_bytes(clean.root / "data/raw")
    assert not (crashed.root / "data/raw/.staging").exists()


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_path_and_leaves_no_spool(tmp_path: Path) -> None:
    """Collect as the stage runs it, into data/ on a real 1 MiB file system: the disk
    fills, and the stage says so in one line, keeps its last manifest and leaves nothing
    of the failed pull on the full disk."""
    project = MiniProject(tmp_path / "project")
    project.add_days(DAY, 1)
    with small_disk(project.root / "data", "1m") as data:
        assert collect_process(project.root).wait(timeout=300) == 0
        before = read_json(data / "raw/manifest.json")
        for i in range(1, 40):  # far more than 1 MiB of new partitions
            project.add_flights(flight_rows(DAY + dt.timedelta(days=i), 400))
        done = subprocess.run([sys.executable, "-m", "tasks.collect"], cwd=project.root,
                              env=env_for(), capture_output=True, text=True, timeout=300)  # fmt: skip
        lines = [line for line in done.stderr.splitlines() if " INFO " not in line]
        assert done.returncode == 1, done.stderr[-3000:]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert lines[0].startswith(f"disk full: no space left on the device holding {data}/")
        assert "MiB free there)" in lines[0]
        assert read_json(data / "raw/manifest.json") == before  # the last good collection
        assert not (data / "raw/.staging").exists()
