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

import pandas as pd
import pyarrow as pa
from pyarrow import feather

from tasks.config import CollectParams, FilesSource, HttpSource, Source, SqlSource, load_params
from tasks.io import (
    prefetched,
    read_json,
    remove_stale_temps,
    sha256_file,
    write_json,
    write_parquet,
)
from tasks.partitions import (
    DAY,
    day_groups,
    later_watermark,
    max_watermark,
    merge_rows,
    partition_days,
    spool_by_day,
    storable,
)
from tasks.paths import Paths
from tasks.progress import Progress
from tasks.sources import SourceError, files

log = logging.getLogger(__name__)


def pull(
    name: str, source: Source, state: dict[str, Any], paths: Paths, chunk_rows: int
) -> tuple[Iterator[pd.DataFrame], dict[str, Any]]:
    """The connector's batches, and the state to record once they are all written."""
    since = state.get("watermark")
    # Connectors are imported when used: a project without HTTP sources never loads httpx.
    if isinstance(source, SqlSource):
        from tasks.sources.sql import read_sql

        return read_sql(name, source, since=since, chunk_rows=chunk_rows, root=paths.root), {}
    if isinstance(source, HttpSource):
        from tasks.sources.http import read_http

        return read_http(name, source, since=since, page_size=chunk_rows), {}
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
    remove_stale_temps(paths.raw / name)
    batches, extra_state = pull(name, source, state, paths, params.chunk_rows)

    new_mark: Any = None
    spooled: Counter[str] = Counter()  # rows per day
    with Progress(f"collect {name}", unit="rows") as bar:
        for seq, batch in enumerate(prefetched(batches)):
            _spool(batch, seq, spool, source, params, spooled)
            if source.watermark and source.watermark in batch.columns:
                new_mark = later_watermark(new_mark, max_watermark(batch[source.watermark]))
            bar.update(len(batch))

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


def _spool(
    batch: pd.DataFrame,
    seq: int,
    spool: Path,
    source: Source,
    params: CollectParams,
    spooled: Counter[str],
) -> None:
    """Write one batch to the spool, a file per day; count its rows per day."""
    days = partition_days(batch, source.partition_by, params.timezone)
    for day, rows in spool_by_day(storable(batch), days):
        path = spool / day / f"{seq:08d}.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Arrow IPC, uncompressed: the spool lives for one run, so speed beats size.
        feather.write_feather(rows, path, compression="uncompressed")
        spooled[day] += rows.num_rows


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
    remove_stale_temps(paths.raw)  # a manifest write cut short
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

    def work() -> None:
        paths = Paths.at()
        run(load_params(paths.params).collect, paths, only=args.source)

    return run_step(work)


if __name__ == "__main__":
    # Run the importable module, not __main__, so log records read "tasks.collect".
    from tasks import collect

    raise SystemExit(collect.main())
