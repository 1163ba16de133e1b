"""Collect: pull what is new at each source into immutable day partitions.

For each enabled source, rows past its watermark are streamed from the connector and
spooled to disk by day, so memory holds one chunk at a time. Each touched day is then
merged with the partition already there (exact re-reads dropped, a newer version of a
row replacing the older) and rewritten under a temporary name. Only when every partition
of the source is in place does the manifest record the new watermark, so a watermark
never moves past data that was not written, and a crash at any point is repaired by
simply running again: the same rows merge into the same bytes.

    data/raw/<source>/<YYYY-MM-DD>.parquet   one local calendar day
    data/raw/<source>/snapshot.parquet       a source without partition_by (reference data)
    data/raw/manifest.json                   per source: watermark, rows, files, checksums
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyarrow import feather

from tasks.config import CollectParams, FilesSource, HttpSource, Source, SqlSource, load_params
from tasks.io import read_json, sha256_file, write_json, write_parquet
from tasks.paths import Paths
from tasks.sources import SourceError, files, http, sql

log = logging.getLogger(__name__)

DAY = "__day"  # the partition a spooled row belongs to, while merging
SNAPSHOT = "snapshot"
UNKNOWN_DAY = "unknown-day"  # rows whose partition timestamp does not parse; validate rejects them


# --- pure steps ---------------------------------------------------------------------------


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


def merge_rows(
    existing: pd.DataFrame | None, new: pd.DataFrame, key: list[str], watermark: str | None
) -> pd.DataFrame:
    """One partition's rows after ``new`` arrived, in a deterministic order.

    Rows read again are dropped; of the versions of one key, those with the newest
    watermark stay. Versions that tie on the watermark but differ are all kept: picking
    one would hide a conflict that validate quarantines as a duplicate key.
    """
    frames = [f for f in (existing, new) if f is not None and len(f)]
    if not frames:
        return new.iloc[0:0]
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


# --- I/O ----------------------------------------------------------------------------------


def pull(
    name: str, source: Source, state: dict[str, Any], paths: Paths, chunk_rows: int
) -> tuple[Iterator[pd.DataFrame], dict[str, Any]]:
    """The connector's batches, and the state to record once they are all written."""
    since = state.get("watermark")
    if isinstance(source, SqlSource):
        return sql.read_sql(name, source, since=since, chunk_rows=chunk_rows), {}
    if isinstance(source, HttpSource):
        return http.read_http(name, source, since=since, page_size=chunk_rows), {}
    assert isinstance(source, FilesSource)
    return _pull_files(name, source, state, paths)


def _pull_files(
    name: str, source: FilesSource, state: dict[str, Any], paths: Paths
) -> tuple[Iterator[pd.DataFrame], dict[str, Any]]:
    folder = paths.resolve(source.path)
    cache_file = paths.collect_state / f"{name}.stat.json"
    try:
        scan = files.scan_folder(
            folder, source.glob, state.get("files_seen", {}), read_json(cache_file, default={})
        )
    except SourceError as exc:
        raise SourceError(f"{name}: {exc}") from None
    # A snapshot source is the union of its current files: any change rereads them all.
    to_read = sorted(scan.current) if source.partition_by is None and scan.changed else scan.changed
    seen, skipped = dict(scan.current), {}

    def batches() -> Iterator[pd.DataFrame]:
        for file_name in to_read:
            try:
                yield files.read_file(folder / file_name)
            except SourceError as exc:
                if source.on_bad_file == "fail":
                    raise SourceError(f"{name}: {exc}") from None
                log.warning("%s: skipped %s", name, exc)
                skipped[file_name] = str(exc)
                seen.pop(file_name)  # read again next run, when the file may be complete
        write_json(cache_file, scan.stat_cache)  # only a shortcut: safe to write early

    return batches(), {"files_seen": seen, "skipped_files": skipped}


def collect_source(
    name: str, source: Source, manifest: dict[str, Any], paths: Paths, params: CollectParams
) -> dict[str, Any]:
    """Collect one source; return its new manifest entry. Nothing is recorded on failure."""
    state = manifest.get("sources", {}).get(name, {})
    spool = paths.staging / name
    shutil.rmtree(spool, ignore_errors=True)  # leftovers of a crashed run
    batches, extra_state = pull(name, source, state, paths, params.chunk_rows)

    new_mark: Any = None
    spooled: Counter[str] = Counter()  # rows per day
    for seq, batch in enumerate(batches):
        if source.watermark and source.watermark in batch.columns:
            new_mark = later_watermark(new_mark, max_watermark(batch[source.watermark]))
        days = partition_days(batch, source.partition_by, params.timezone)
        for day, rows in spool_by_day(storable(batch), days):
            path = spool / day / f"{seq:08d}.arrow"
            path.parent.mkdir(parents=True, exist_ok=True)
            # Arrow IPC, uncompressed: the spool lives for one run, so speed beats size.
            feather.write_feather(rows, path, compression="uncompressed")
            spooled[day] += rows.num_rows

    partitions = dict(state.get("partitions", {}))
    before = dict(partitions)
    for group in day_groups(spooled, params.chunk_rows):
        partitions.update(_merge_days(group, spool, paths.raw / name, source))
    shutil.rmtree(spool, ignore_errors=True)

    entry = {
        "kind": source.kind,
        "watermark": later_watermark(state.get("watermark"), new_mark),
        "rows": sum(p["rows"] for p in partitions.values()),
        "partitions": dict(sorted(partitions.items())),
        **extra_state,
    }
    changed = sum(partitions[p] != before.get(p) for p in partitions)
    log.info(
        "%s: %d rows read, %d partitions touched, %d changed, watermark %s",
        name, spooled.total(), len(spooled), changed, entry["watermark"],
    )  # fmt: skip
    return entry


def spool_by_day(batch: pd.DataFrame, days: pd.Series) -> Iterator[tuple[str, pa.Table]]:
    """The batch as one Arrow table, cut into one slice per day (in day order)."""
    order = np.argsort(days.to_numpy(dtype=object), kind="stable")
    table = pa.Table.from_pandas(batch, preserve_index=False).take(order)
    names, starts = np.unique(days.to_numpy(dtype=object)[order], return_index=True)
    ends = [*starts[1:], len(order)]
    for name, start, end in zip(names, starts, ends, strict=True):
        yield str(name), table.slice(start, end - start)


def day_groups(rows_per_day: Counter[str], max_rows: int) -> list[list[str]]:
    """Days in order, grouped so a group holds about max_rows rows (at least one day).

    Merging a group in one vectorised pass costs far less than a pass per day, and
    memory stays bounded by the group, not by the whole pull.
    """
    groups: list[list[str]] = []
    size = 0
    for day in sorted(rows_per_day):
        if not groups or size + rows_per_day[day] > max_rows:
            groups.append([])
            size = 0
        groups[-1].append(day)
        size += rows_per_day[day]
    return groups


def _merge_days(
    days: list[str], spool: Path, out_dir: Path, source: Source
) -> dict[str, dict[str, Any]]:
    """Merge the spooled rows of some days into their partitions; return their entries."""
    replace = source.partition_by is None  # a snapshot is replaced, not merged
    pieces = []
    for day in days:
        for path in sorted((spool / day).glob("*.arrow")):
            table = feather.read_table(path)
            pieces.append(table.append_column(DAY, pa.array([day] * table.num_rows)))
    new = pa.concat_tables(pieces, promote_options="permissive").to_pandas()
    existing = {
        day: pd.read_parquet(out_dir / f"{day}.parquet")
        for day in days
        if not replace and (out_dir / f"{day}.parquet").exists()
    }
    old = pd.concat([f.assign(**{DAY: d}) for d, f in existing.items()]) if existing else None
    merged = merge_rows(old, new, [DAY, *source.key], source.watermark)
    entries = {}
    for day, rows in merged.groupby(DAY, sort=True):
        rows = rows.drop(columns=DAY).reset_index(drop=True)
        target = out_dir / f"{day}.parquet"
        if day not in existing or not rows.equals(existing[day]):  # else keep bytes and mtime
            write_parquet(target, rows)
        entries[target.name] = {"rows": len(rows), "sha256": sha256_file(target)}
    return entries


def run(params: CollectParams, paths: Paths, only: list[str] | None = None) -> dict[str, Any]:
    """Collect every enabled source (or those named in ``only``); return the manifest."""
    manifest = read_json(paths.manifest, default={"version": 1, "sources": {}})
    sources = params.enabled_sources()
    unknown = sorted(set(only or []) - set(sources))
    if unknown:
        raise SourceError(f"no enabled source named {', '.join(unknown)} in collect.sources")
    for name, source in sources.items():
        if only and name not in only:
            continue
        manifest["sources"][name] = collect_source(name, source, manifest, paths, params)
        # Recorded per source: a later source failing keeps this one's progress.
        write_json(paths.manifest, manifest)
    shutil.rmtree(paths.staging, ignore_errors=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tasks.cli_support import run_step

    parser = argparse.ArgumentParser(
        prog="python -m tasks.collect", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--source", action="append", help="collect only this source (repeatable)")
    args = parser.parse_args(argv)

    def step() -> None:
        paths = Paths.at()
        run(load_params(paths.params).collect, paths, only=args.source)

    return run_step(step)


if __name__ == "__main__":
    # Run the importable module, not __main__, so log records read "tasks.collect".
    from tasks import collect

    raise SystemExit(collect.main())
