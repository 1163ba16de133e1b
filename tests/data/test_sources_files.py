"""The files connector: new and changed files, and files that cannot be read."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from tasks.core.errors import SourceError
from tasks.core.io import sha256_file
from tasks.data.sources import files
from tasks.data.sources.files import read_file, scan_folder
from tests.factories import MiniProject, weather_rows

DAY = dt.date(2013, 3, 1)


def test_scan_picks_up_new_and_changed_files_only(project: MiniProject) -> None:
    first = project.drop_weather(DAY)
    scan = scan_folder(project.weather_dir, "weather_*.csv", {})
    assert scan.changed == [first.name]

    again = scan_folder(project.weather_dir, "weather_*.csv", scan.current, scan.stat_cache)
    assert again.changed == []
    assert (
        again.current
        == scan.current
        == {first.name: {"size": first.stat().st_size, "sha256": sha256_file(first)}}
    )

    second = project.drop_weather(DAY + dt.timedelta(days=1))
    os.utime(first, ns=(0, first.stat().st_mtime_ns + 10**9))  # touched, same bytes
    scan2 = scan_folder(project.weather_dir, "weather_*.csv", again.current, again.stat_cache)
    assert scan2.changed == [second.name]

    rows = weather_rows(DAY)
    rows.loc[0, "temp"] = "41.0"  # a corrected file
    project.drop_weather(DAY, rows)
    scan3 = scan_folder(project.weather_dir, "weather_*.csv", scan2.current, scan2.stat_cache)
    assert scan3.changed == [first.name]


def test_stat_cache_spares_hashing_unchanged_files(project: MiniProject, monkeypatch) -> None:
    project.drop_weather(DAY)
    scan = scan_folder(project.weather_dir, "weather_*.csv", {})
    hashed: list[Path] = []
    monkeypatch.setattr(files, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    scan_folder(project.weather_dir, "weather_*.csv", scan.current, scan.stat_cache)
    assert hashed == []
    scan_folder(project.weather_dir, "weather_*.csv", scan.current, {})  # cache lost: rehash
    assert len(hashed) == 1


def test_csv_is_read_as_text(project: MiniProject) -> None:
    frame = read_file(project.drop_weather(DAY))
    assert len(frame) == 72
    assert frame["temp"].iloc[0] == "39.02"  # parsing is validate's job
    assert frame["wind_gust"].isna().all()


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        scan_folder(tmp_path / "nope", "*.csv", {})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "is empty"),
        ("latin1.csv", "origin,temp\nEWR,caf\xe9\n".encode("latin-1"), "not UTF-8 text: byte 0xe9"),
        ("cut.parquet", b"PAR1\x15\x04\x15\x10", "not a readable Parquet file"),
        ("bad.csv", b'origin,temp\n"EWR,39\n', "not a readable CSV file"),
        ("noname.csv", b"origin,,temp\nEWR,1,2\n", "empty column names"),
        ("data.xlsx", b"PK\x03\x04", "unsupported file type"),
    ],
)
def test_unreadable_files_are_clear_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message) as err:
        read_file(path)
    assert name in str(err.value)
