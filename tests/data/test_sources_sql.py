"""The SQL connector against SQLite and, when reachable, PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from tasks.core.config import SqlSource
from tasks.core.errors import ConfigError, SourceError
from tasks.data.sources.sql import read_sql
from tests.factories import MiniProject, flight_rows

KEY = ["year", "month", "day", "carrier", "flight", "origin"]


def source(url: str, **overrides) -> SqlSource:
    spec = {"kind": "sql", "url_env": "PLUMBER_TEST_UNSET_URL", "default_url": url,
            "table": "flights", "key": KEY, "watermark": "updated_at",
            "partition_by": "time_hour", "schema": "flights", **overrides}  # fmt: skip
    return SqlSource.model_validate(spec)


def pulled(src: SqlSource, since=None, chunk_rows: int = 3) -> list[pd.DataFrame]:
    return list(read_sql("flights", src, since=since, chunk_rows=chunk_rows))


def check_connector(project: MiniProject, src: SqlSource) -> None:
    """What every SQL database must do: chunks, the watermark bound, declared types."""
    project.add_flights(flight_rows(dt.date(2013, 3, 1), 5))
    project.add_flights(flight_rows(dt.date(2013, 3, 2), 4, first_flight=100))

    chunks = pulled(src)
    assert [len(c) for c in chunks] == [3, 3, 3]  # streamed in chunks of chunk_rows
    rows = pd.concat(chunks, ignore_index=True)
    assert len(rows) == 9 and not rows.duplicated(KEY).any()
    assert pd.api.types.is_datetime64_any_dtype(rows["time_hour"])
    assert pd.api.types.is_integer_dtype(rows["flight"])

    # Past the watermark: the second day only (>= keeps same-stamp late commits).
    later = pd.concat(pulled(src, since="2013-03-03T05:00:00+00:00"), ignore_index=True)
    assert sorted(later["flight"]) == [100, 101, 102, 103]
    assert pulled(src, since="2013-03-04T05:00:00+00:00") == []


def test_sqlite_table(project: MiniProject) -> None:
    check_connector(project, source(project.db_url))


def test_sqlite_query(project: MiniProject) -> None:
    query = "SELECT * FROM flights WHERE origin <> 'LGA'"
    project.add_flights(flight_rows(dt.date(2013, 3, 1), 6))
    rows = pd.concat(pulled(source(project.db_url, table=None, query=query)))
    assert set(rows["origin"]) == {"EWR", "JFK"} and len(rows) == 4
    later = pulled(source(project.db_url, table=None, query=query), since="2013-03-02T06:00:00Z")
    assert later == []


def test_missing_table_names_it(project: MiniProject) -> None:
    with pytest.raises(SourceError, match="flights: table 'nope' not found"):
        pulled(source(project.db_url, table="nope"))


def test_unset_url_variable_names_it() -> None:
    src = source("sqlite://", default_url=None, url_env="PLUMBER_TEST_URL")
    with pytest.raises(ConfigError, match="environment variable PLUMBER_TEST_URL is not set"):
        pulled(src)


def test_unreachable_database_is_a_clear_error_without_the_password(monkeypatch) -> None:
    url = "postgresql://scott:tiger-secret@127.0.0.1:1/nothing"
    monkeypatch.setenv("PLUMBER_TEST_URL", url)
    src = source("sqlite://", default_url=None, url_env="PLUMBER_TEST_URL")
    with pytest.raises(
        SourceError, match=r"flights: cannot read postgresql://scott:\*\*\*@"
    ) as err:
        pulled(src)
    assert "tiger-secret" not in str(err.value)


def test_relative_sqlite_path_is_taken_from_the_project_root(tmp_path, monkeypatch) -> None:
    src = source("sqlite:///var/upstream/flights.db")
    assert src.resolve_url(tmp_path) == f"sqlite:///{tmp_path}/var/upstream/flights.db"
    assert source("sqlite:////abs/f.db").resolve_url(tmp_path) == "sqlite:////abs/f.db"
    monkeypatch.setenv("PLUMBER_TEST_URL", "postgresql://db/x")
    assert source(None, default_url=None, url_env="PLUMBER_TEST_URL").resolve_url(tmp_path) == (
        "postgresql://db/x"
    )


def test_password_in_params_is_refused() -> None:
    with pytest.raises(ValueError, match="holds a password"):
        source("postgresql://scott:tiger@db/x")


@pytest.mark.postgres
def test_postgresql_table(tmp_path, pg_url: str, pg_table: str) -> None:
    project = MiniProject(tmp_path, db_url=pg_url, table=pg_table)
    check_connector(project, source(pg_url, table=pg_table))


def test_a_table_without_the_watermark_column_names_the_params_key(project: MiniProject) -> None:
    project.add_flights(flight_rows(dt.date(2013, 3, 1), 2))
    with pytest.raises(ConfigError, match=(
        r"collect.sources.flights.watermark: column 'changed_at' is not in table 'flights' "
        r"\(its columns: year, month, day, .*updated_at\)"
    )) as err:  # fmt: skip
        pulled(source(project.db_url, watermark="changed_at"), since="2013-03-01T00:00:00Z")
    assert err.value.exit_code == 2


@pytest.fixture
def new_york_db(pg_database: str) -> str:
    """A database whose sessions are in New York time (its `timezone` setting), as an
    operations database in New York may well be."""
    import psycopg

    name = pg_database.rsplit("/", 1)[1]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'America/New_York'")
        assert conn.execute("SHOW timezone").fetchone() is not None
    with psycopg.connect(pg_database) as conn:  # a new session takes the setting
        assert conn.execute("SHOW timezone").fetchone() == ("America/New_York",)
    return pg_database


@pytest.mark.postgres
def test_a_new_york_session_loses_no_row_corrected_after_the_watermark(new_york_db: str) -> None:
    """A user's own table written with DataFrame.to_sql: `updated_at` and `time_hour` are
    `timestamp with time zone`. Ten rows corrected in place two hours after the watermark
    are read again, from a table source and from a query source, and a lost day's rows are
    read back exactly, whatever zone the session is in."""
    import sqlalchemy as sa

    from tasks.data.partitions import day_span, max_watermark

    rows = pd.concat([flight_rows(dt.date(2013, 3, 1), 20),
                      flight_rows(dt.date(2013, 3, 2), 20, first_flight=100)])  # fmt: skip
    for column in ("time_hour", "updated_at"):
        rows[column] = pd.to_datetime(rows[column], utc=True)
    engine = sa.create_engine(new_york_db)
    rows.to_sql("flights", engine, index=False)
    with engine.connect() as conn:
        kinds = dict(conn.execute(sa.text(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'flights'")).fetchall())  # fmt: skip
    assert kinds["updated_at"] == kinds["time_hour"] == "timestamp with time zone"

    table = source(new_york_db)
    watermark = max_watermark(pd.concat(pulled(table, chunk_rows=100))["updated_at"])
    assert watermark == "2013-03-03T05:00:00+00:00"  # local midnight after March 2
    with engine.begin() as conn:  # ten rows of March 1 corrected two hours later
        conn.execute(sa.text(
            "UPDATE flights SET dep_delay = dep_delay + 60, "
            "updated_at = TIMESTAMPTZ '2013-03-03 07:00:00+00' WHERE flight <= 10"))  # fmt: skip
    query = source(new_york_db, table=None, query="SELECT * FROM flights")
    for src in (table, query):
        chunks = pulled(src, since=watermark, chunk_rows=100)
        assert chunks, f"no row read past {watermark} ({src.table or src.query})"
        again = pd.concat(chunks)
        corrected = again[pd.to_datetime(again["updated_at"], utc=True) > pd.Timestamp(watermark)]
        assert sorted(corrected["flight"]) == list(range(1, 11)), src.table or src.query
        assert (corrected["dep_delay"] >= 60).all()

    lost = [day_span("2013-03-02", "America/New_York")]
    for src in (table, query):
        day = pd.concat(list(read_sql("flights", src, since=None, chunk_rows=100, spans=lost)))
        assert sorted(day["flight"]) == list(range(100, 120)), src.table or src.query
    engine.dispose()
