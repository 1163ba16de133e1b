"""Day partitions: which partition a row belongs to, and how new rows merge into one.

Pure functions over in-memory data, used by collect. A partition's content, and so its
bytes, depends only on the rows in it: not on the order they arrived in, on how the
pull was chunked, or on how many runs it took.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from tasks.core.errors import SourceError
from tasks.data import sources

DAY = "__day"  # the partition a spooled row belongs to, while merging
# Columns collect adds, not the source's: validate leaves them out of the schema check.
META_PREFIX = "_"
SOURCE_FILE = "_file"  # the dropped file a row came from (files sources)
INVALID = sources.INVALID  # JSON {column: raw text} of values that did not fit their type
SNAPSHOT = "snapshot"
UNKNOWN_DAY = "unknown-day"  # rows whose partition timestamp does not parse; validate rejects them


def partition_days(frame: pd.DataFrame, column: str | None, tz: str) -> pd.Series:
    """The partition name of each row: its local calendar day, or 'snapshot'."""
    if column is None:
        return pd.Series(SNAPSHOT, index=frame.index)
    if column not in frame.columns:
        raise SourceError(f"partition column {column!r} is missing from the rows")
    stamps = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    # Format each distinct day once, not every timestamp.
    codes, days = pd.factorize(stamps.dt.tz_convert(tz).dt.normalize())
    names = np.append(np.asarray(days.strftime("%Y-%m-%d"), dtype=object), UNKNOWN_DAY)
    return pd.Series(names[codes], index=frame.index)  # code -1 (no timestamp) -> UNKNOWN_DAY


def day_span(day: str, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """The partition `day` (a local calendar day in `tz`) as [start, end) in naive UTC,
    how timestamps are stored upstream."""
    from zoneinfo import ZoneInfo

    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=ZoneInfo(tz))
    end = dt.datetime.combine(start.date() + dt.timedelta(days=1), dt.time(), tzinfo=start.tzinfo)
    return tuple(t.astimezone(dt.UTC).replace(tzinfo=None) for t in (start, end))  # type: ignore[return-value]


def storable(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns Parquet can hold: a column mixing types (text in a REAL column, which
    SQLite allows) is kept as text, so validate can reject the bad cells row by row."""
    mixed = [
        col
        for col in frame.columns
        if pd.api.types.is_object_dtype(frame[col])
        and len({type(v) for v in frame[col].dropna()}) > 1
    ]
    if not mixed:
        return frame
    frame = frame.copy()
    for col in mixed:
        frame[col] = frame[col].map(lambda v: None if pd.isna(v) else str(v))
    return frame


def without_files(
    existing: pd.DataFrame, files: set[str], columns_of_others: list[str] | None
) -> pd.DataFrame:
    """A partition's rows less those that `files` contributed (a changed file replaces
    what its earlier version contributed). Columns only the removed rows had go too, so
    the partition is what it would be had the earlier version never arrived;
    `columns_of_others`: the columns of the files whose rows remain (None: keep all)."""
    if SOURCE_FILE not in existing.columns or not files:
        return existing
    kept = existing[~existing[SOURCE_FILE].isin(files)]
    if columns_of_others is not None:
        keep = set(columns_of_others) | {SOURCE_FILE, DAY}
        kept = kept[[c for c in kept.columns if c in keep or kept[c].notna().any()]]
    return kept.reset_index(drop=True)


def drop_empty_meta(frame: pd.DataFrame) -> pd.DataFrame:
    """Without the INVALID column when no row has an invalid value: a partition's bytes
    then do not remember a bad value that a newer version of its row replaced."""
    if INVALID in frame.columns and frame[INVALID].isna().all():
        return frame.drop(columns=INVALID)
    return frame


def merge_rows(
    existing: pd.DataFrame | None,
    new: pd.DataFrame | None,
    key: list[str],
    watermark: str | None,
) -> pd.DataFrame:
    """One partition's rows after ``new`` arrived, in a deterministic order.

    Rows read again are dropped; of the versions of one key, those with the newest
    watermark stay. Versions that tie on the watermark but differ are all kept: picking
    one would hide a conflict that validate quarantines as a duplicate key.
    """
    frames = [f for f in (existing, new) if f is not None and len(f)]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    row_hash = pd.util.hash_pandas_object(frame, index=False)
    frame = _drop_rereads(frame, row_hash)
    if watermark and watermark in frame.columns and set(key) <= set(frame.columns):
        frame = _newest_versions(frame, key, watermark)
    return _canonical_order(frame, row_hash.loc[frame.index], key, watermark)


def _drop_rereads(frame: pd.DataFrame, row_hash: pd.Series) -> pd.DataFrame:
    # Only rows whose hash repeats can be copies; comparing just those in full keeps
    # this exact (no trust in the hash) and cheap (usually none, or one day re-read).
    maybe = row_hash.duplicated(keep=False)
    if not maybe.any():
        return frame
    copies = frame[maybe].duplicated()
    return frame.drop(index=copies.index[copies])


def _newest_versions(frame: pd.DataFrame, key: list[str], watermark: str) -> pd.DataFrame:
    repeated = pd.util.hash_pandas_object(frame[key], index=False).duplicated(keep=False)
    if not repeated.any():
        return frame
    versions = frame[repeated]
    order = _sortable(versions[watermark])
    newest = order.groupby([versions[k] for k in key], dropna=False).transform("max")
    stale = ~((order == newest) | newest.isna())
    return frame.drop(index=versions.index[stale])


def max_watermark(values: pd.Series) -> Any:
    """The largest watermark as a JSON value: an ISO timestamp string, or a number."""
    if values.dropna().empty:
        return None
    if pd.api.types.is_numeric_dtype(values):
        return values.max().item()
    stamps = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601").dropna()
    if stamps.empty:
        return None
    return stamps.max().isoformat()


def later_watermark(a: Any, b: Any) -> Any:
    """The later of two stored watermarks (None means 'nothing seen yet')."""
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, str) and isinstance(b, str):
        return max(a, b, key=_utc)
    return max(a, b)


def _utc(stamp: str) -> pd.Timestamp:
    parsed = pd.Timestamp(stamp)
    return parsed.tz_localize("UTC") if parsed.tzinfo is None else parsed.tz_convert("UTC")


def _sortable(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return values
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")


def _canonical_order(
    frame: pd.DataFrame, row_hash: pd.Series, key: list[str], watermark: str | None
) -> pd.DataFrame:
    # Key, then watermark, then the row's hash to order conflicting versions.
    cols = [c for c in [*key, watermark] if c and c in frame.columns]
    ordered = frame.assign(__row_hash=row_hash).sort_values(
        [*cols, "__row_hash"], kind="mergesort", na_position="last"
    )
    return ordered.drop(columns="__row_hash").reset_index(drop=True)


def spool_by_day(batch: pd.DataFrame, days: pd.Series) -> Iterator[tuple[str, pa.Table]]:
    """The batch as one Arrow table, cut into one slice per day (in day order)."""
    if batch.empty:  # a header-only file: nothing to spool
        return
    order = np.argsort(days.to_numpy(dtype=object), kind="stable")
    table = pa.Table.from_pandas(batch, preserve_index=False).take(order)
    names, starts = np.unique(days.to_numpy(dtype=object)[order], return_index=True)
    ends = [*starts[1:], len(order)]
    for name, start, end in zip(names, starts, ends, strict=True):
        yield str(name), table.slice(start, end - start)
