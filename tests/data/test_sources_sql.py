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
