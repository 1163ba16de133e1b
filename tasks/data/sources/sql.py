"""Rows past a watermark from any SQLAlchemy database, streamed in chunks."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tasks.core.config import SqlSource
from tasks.core.errors import ConfigError, SourceError
from tasks.data.sources import INVALID

log = logging.getLogger(__name__)


def safe_url(url: str) -> str:
    """The URL as it may appear in logs and messages: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL may still hold a secret
        return "<unparsable URL>"


def read_sql(
    name: str,
    source: SqlSource,
    *,
    since: Any,
    chunk_rows: int,
    root: Path | None = None,
    spans: list[tuple[dt.datetime, dt.datetime]] | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield the rows whose watermark is at or past ``since``, in the database's order.

    ``>=`` rather than ``>``: rows committed later with the same watermark value as the
    last ones seen are not lost; collect drops the re-read duplicates.

    ``spans``: instead, the rows whose partition column falls in one of these [start, end)
    ranges (naive UTC): the days of partitions that were lost, read again.
    """
    url = source.resolve_url(root)
    engine = in_utc(sa.create_engine(url))
    try:
        # stream_results: a server-side cursor where the driver has one, so memory
        # holds one chunk, not the table.
        with engine.connect().execution_options(stream_results=True) as conn:
            stmt, declared = _select(name, source, conn, since, spans)
            for chunk in pd.read_sql(stmt, conn, chunksize=chunk_rows):
                if len(chunk):  # pandas yields one empty frame when nothing matched
                    yield with_declared_types(chunk, declared)
    except sa.exc.NoSuchTableError as exc:
        raise SourceError(f"{name}: table {source.table!r} not found at {safe_url(url)}") from exc
    except sa.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise SourceError(f"{name}: cannot read {safe_url(url)}: {detail}") from None
    finally:
        engine.dispose()


# Statements that put a session in UTC, per SQLAlchemy dialect. Bounds are bound as naive
# UTC; a database whose session is in another zone (PGTZ, a server `timezone` setting, as an
# operations database in New York may well have) reads a naive value against a column with
# a time zone in its own zone, and `updated_at >= W` would ask for W + 5 h: rows corrected
# in between never collected. In UTC, naive and zoned columns compare as stored.
UTC_SESSION = {
    "postgresql": "SET TIME ZONE 'UTC'",
    "mysql": "SET time_zone = '+00:00'",
    "mariadb": "SET time_zone = '+00:00'",
}


def in_utc(engine: sa.Engine) -> sa.Engine:
    """The engine, each new connection's session put in UTC (committed at once, so no
    rollback undoes it). Databases without session zones (SQLite) are left as they are."""
    statement = UTC_SESSION.get(engine.dialect.name)
    if statement is not None:

        def to_utc(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()
            dbapi_connection.commit()

        sa.event.listen(engine, "connect", to_utc)
    return engine


# The pandas dtype for each kind of declared column type (nullable where numpy is not).
DECLARED_DTYPES = {int: "Int64", float: "float64", str: "str", bool: "boolean"}


def with_declared_types(chunk: pd.DataFrame, declared: dict[str, str]) -> pd.DataFrame:
    """Cast a chunk to the database's declared column types.

    pandas infers a chunk's types from its values: an integer column holding one NULL
    becomes float, an all-NULL column becomes object. The declared types make every
    chunk, and so every partition, typed alike. A value that does not fit its declared
    type (SQLite allows text in a REAL column) becomes null there, and its raw text goes
    to the INVALID column, for validate to quarantine that row naming the column.
    """
    casts: dict[str, pd.Series] = {}
    invalid: dict[Any, dict[str, str]] = {}
    for column, dtype in declared.items():
        if column in chunk.columns and str(chunk[column].dtype) != dtype:
            try:
                casts[column] = chunk[column].astype(dtype)
            except (TypeError, ValueError):
                casts[column] = _coerce(chunk[column], dtype)
                bad = chunk[column].notna() & casts[column].isna()
                for row in chunk.index[bad]:
                    invalid.setdefault(row, {})[column] = str(chunk.at[row, column])
    typed = chunk.assign(**casts) if casts else chunk
    if invalid:
        raw = [
            json.dumps(invalid[i], sort_keys=True) if i in invalid else None for i in typed.index
        ]
        typed = typed.assign(**{INVALID: raw})
    return typed


def _coerce(values: pd.Series, dtype: str) -> pd.Series:
    """The column in `dtype`, values that do not fit it null."""
    if dtype.startswith("datetime64"):
        stamps = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
        return stamps.dt.tz_localize(None).astype(dtype)
    numbers = pd.to_numeric(values, errors="coerce")
    if dtype == "Int64":
        numbers = numbers.where(numbers % 1 == 0)
    if dtype == "boolean":
        return numbers.where(numbers.isin([0, 1])).astype("boolean")
    return numbers.astype(dtype)


def _declared(table: sa.Table) -> dict[str, str]:
    declared = {}
    for column in table.columns:
        try:
            python_type = column.type.python_type
        except NotImplementedError:
            continue
        if python_type in DECLARED_DTYPES:
            declared[column.name] = DECLARED_DTYPES[python_type]
        elif python_type is dt.datetime:
            declared[column.name] = "datetime64[us]"
    return declared


def _select(
    name: str,
    source: SqlSource,
    conn: sa.Connection,
    since: Any,
    spans: list[tuple[dt.datetime, dt.datetime]] | None = None,
) -> tuple[sa.Select, dict[str, str]]:
    """The query, and the declared column types (none for a free-form query)."""
    assert source.watermark is not None
    declared: dict[str, str] = {}
    stmt: sa.Select
    if source.table is not None:
        table = sa.Table(source.table, sa.MetaData(), autoload_with=conn)
        declared = _declared(table)
        # Values come back as the driver gives them (no per-value conversion in Python);
        # with_declared_types then casts whole columns at once.
        stmt = sa.select(*(sa.type_coerce(c, sa.types.NullType()).label(c.name) for c in table.c))
        mark: Any = _column(table, source.watermark, f"collect.sources.{name}.watermark")
        if since is not None:  # binds with the column's own type
            stmt = stmt.where(mark >= _for_column(mark, watermark_value(since)))
        if spans and source.partition_by:
            column = _column(table, source.partition_by, f"collect.sources.{name}.partition_by")
            stmt = stmt.where(sa.or_(*(
                (column >= _for_column(column, a)) & (column < _for_column(column, b))
                for a, b in spans
            )))  # fmt: skip
    else:
        stmt = sa.select(sa.literal_column("*")).select_from(sa.text(f"({source.query}) AS src"))
        mark = sa.literal_column(f"src.{source.watermark}")
        if since is not None:
            value = watermark_value(since)
            kind = sa.DateTime() if isinstance(value, dt.datetime) else None
            stmt = stmt.where(mark >= sa.bindparam("since", value, type_=kind))
        if spans and source.partition_by:
            day: Any = sa.literal_column(f"src.{source.partition_by}")
            stmt = stmt.where(sa.or_(*(
                (day >= sa.bindparam(f"a{i}", a, type_=sa.DateTime()))
                & (day < sa.bindparam(f"b{i}", b, type_=sa.DateTime()))
                for i, (a, b) in enumerate(spans)
            )))  # fmt: skip
    # No ORDER BY: collect orders each partition canonically and moves the watermark
    # only after the whole pull is written, so arrival order changes no byte, and
    # sorting the table would cost the database more than the pull itself.
    return stmt, declared


def _column(table: sa.Table, name: str, key: str) -> Any:
    """The table's column that the params key `key` names; a clear error if it has none."""
    if name not in table.c:
        raise ConfigError(
            f"{key}: column {name!r} is not in table {table.name!r} "
            f"(its columns: {', '.join(table.c.keys())})"
        )
    return table.c[name]


def _for_column(column: Any, value: Any) -> Any:
    """A naive UTC bound made aware for a column with a time zone: compared as the instant
    it is, whatever zone the session is in."""
    zoned = isinstance(column.type, sa.DateTime) and column.type.timezone
    if zoned and isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def watermark_value(since: Any) -> Any:
    """A stored watermark (JSON: an ISO timestamp string or a number) as a Python value.

    Timestamps are compared as naive UTC, which is how they are stored upstream.
    """
    if isinstance(since, str):
        try:
            stamp = dt.datetime.fromisoformat(since)
        except ValueError:
            return since
        if stamp.tzinfo is not None:
            stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
        return stamp
    return since
