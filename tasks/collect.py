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

import itertools
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pandas as pd

from tasks.core.batching import in_batches
from tasks.core.config import CollectParams, FilesSource, HttpSource, Source, SqlSource, load_params
from tasks.core.errors import DiskFull, SourceError, is_disk_full
from tasks.core.io import (
    prefetched,
    read_json,
    remove_stale_temps,
    write_json,
)
from tasks.core.paths import Paths
from tasks.core.progress import Progress
from tasks.data import integrity
from tasks.data.partitions import (
    SOURCE_FILE,
    day_span,
    later_watermark,
    max_watermark,
    partition_days,
)
from tasks.data.sources import files
from tasks.data.spool import Merge, spool_batch

log = logging.getLogger(__name__)


def pull(
    name: str,
    source: Source,
    state: dict[str, Any],
    paths: Paths,
    params: CollectParams,
    reread: list[str],
) -> tuple[Iterator[pd.DataFrame], dict[str, Any], dict[str, list[str]]]:
    """The connector's batches, the state to record once they are all written, and the
    files whose earlier version's rows they replace (file name -> its days).

    `reread`: days whose partition was lost and must be read again from the source."""
    since = state.get("watermark")
    # Connectors are imported when used: a project without HTTP sources never loads httpx.
    if isinstance(source, SqlSource):
        from tasks.data.sources.sql import read_sql

        batches = read_sql(name, source, since=since, chunk_rows=params.chunk_rows, root=paths.root)
        if reread:
            spans = [day_span(day, params.timezone) for day in reread]
            again = read_sql(name, source, since=None, chunk_rows=params.chunk_rows,
                             root=paths.root, spans=spans)  # fmt: skip
            batches = itertools.chain(batches, again)
        return batches, {}, {}
    if isinstance(source, HttpSource):
        from tasks.data.sources.http import read_http

        if reread:
            raise SourceError(
                f"{name}: {', '.join(reread)} lost and not in the DVC cache, and an HTTP source "
                "cannot be asked for past days: restore data/raw with `dvc checkout` or "
                "`dvc pull`"
            )
        return read_http(name, source, since=since, page_size=params.chunk_rows), {}, {}
    assert isinstance(source, FilesSource)
    return _pull_files(name, source, state, paths, params.timezone, reread)


def _pull_files(
    name: str,
    source: FilesSource,
    state: dict[str, Any],
    paths: Paths,
    timezone: str,
    reread: list[str],
) -> tuple[Iterator[pd.DataFrame], dict[str, Any], dict[str, list[str]]]:
    folder = paths.resolve(source.folder())
    cache_file = paths.collect_state / f"{name}.stat.json"
    before: dict[str, dict[str, Any]] = state.get("files_seen", {})
    # Files that fed a lost partition are read again (all, if the record cannot tell).
    lost = set(reread)
    again = {f for f, info in before.items() if lost and lost & set(info.get("partitions", lost))}
    try:
        scan = files.scan_folder(
            folder, source.glob, {f: i for f, i in before.items() if f not in again},
            read_json(cache_file, default={}),
        )  # fmt: skip
    except SourceError as exc:
        raise SourceError(f"{name}: {exc}") from None
    # A snapshot source is the union of its current files: any change rereads them all.
    to_read = sorted(scan.current) if source.partition_by is None and scan.changed else scan.changed
    seen = {f: {**before.get(f, {}), **fingerprint} for f, fingerprint in scan.current.items()}
    replaced = {f: before[f].get("partitions", []) for f in to_read if f in before}
    skipped: dict[str, str] = {}

    def batches() -> Iterator[pd.DataFrame]:
        for file_name in to_read:
            try:
                frame = files.read_file(folder / file_name)
            except SourceError as exc:
                if source.on_bad_file == "fail":
                    raise SourceError(f"{name}: {exc}") from None
                log.warning("%s: skipped %s", name, exc)
                skipped[file_name] = str(exc)
                seen.pop(file_name)  # read again next run, when the file may be complete
                continue
            if frame.empty:  # the real data has no weather for 2013-12-31: say so
                log.warning("%s: %s", name, files.no_rows(file_name))
            # What the file holds, so a later version of it can replace exactly that, and
            # validate can name the file whose columns changed.
            days = partition_days(frame, source.partition_by, timezone)
            seen[file_name].update(columns=list(frame.columns), partitions=sorted(set(days)))
            yield frame.assign(**{SOURCE_FILE: file_name})
        write_json(cache_file, scan.stat_cache)  # only a shortcut: safe to write early

    return batches(), {"files_seen": seen, "skipped_files": skipped}, replaced


def collect_source(
    name: str, source: Source, manifest: dict[str, Any], paths: Paths, params: CollectParams
) -> tuple[dict[str, Any], int]:
    """Collect one source; return its new manifest entry and the rows read from it (new or
    re-read: incremental reads overlap). Nothing is recorded on failure."""
    state = manifest.get("sources", {}).get(name, {})
    spool = paths.staging / name
    shutil.rmtree(spool, ignore_errors=True)  # leftovers of a crashed run
    remove_stale_temps(paths.raw / name)
    partitions = dict(state.get("partitions", {}))
    reread = integrity.repair_partitions(paths, name, partitions)  # removed from `partitions`
    batches, extra_state, replaced = pull(name, source, state, paths, params, reread)

    new_mark: Any = None
    spooled: Counter[str] = Counter()  # rows per day
    with Progress(f"collect {name}", unit="rows") as bar:
        for seq, batch in enumerate(prefetched(batches)):
            spool_batch(batch, seq, spool, source, params, spooled)
            if source.watermark and source.watermark in batch.columns:
                new_mark = later_watermark(new_mark, max_watermark(batch[source.watermark]))
            bar.update(len(batch))

    before = dict(partitions)
    # Days with new rows, and days an earlier version of a changed file fed.
    days = {*spooled, *itertools.chain(*replaced.values())}
    touched = Counter({day: spooled[day] for day in days})
    merge = Merge(spool, paths.raw / name, source, replaced, extra_state.get("files_seen"))
    for group in in_batches(touched, params.chunk_rows):
        for file_name, entry in merge.days(group).items():
            if entry is None:
                partitions.pop(file_name, None)  # its only file's new version left that day
            else:
                partitions[file_name] = entry
    shutil.rmtree(spool, ignore_errors=True)
    unrestored = [day for day in reread if f"{day}.parquet" not in partitions]
    if unrestored:
        raise SourceError(
            f"{name}: partition(s) {', '.join(unrestored)} lost; neither the DVC cache nor the "
            "source has their rows now: restore data/raw with `dvc pull` (from a remote with "
            "a good copy), or accept the loss by removing them from data/raw/manifest.json"
        )

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
        name, spooled.total(), len(touched), changed, entry["watermark"],
    )  # fmt: skip
    return entry, spooled.total()


def run(params: CollectParams, paths: Paths, only: list[str] | None = None) -> dict[str, Any]:
    """Collect every enabled source (or those named in ``only``); return the manifest."""
    remove_stale_temps(paths.raw)  # a manifest write cut short
    manifest = read_json(paths.manifest, default={"version": 1, "sources": {}})
    sources = params.enabled_sources()
    unknown = sorted(set(only or []) - set(sources))
    if unknown:
        raise SourceError(f"no enabled source named {', '.join(unknown)} in collect.sources")
    # Added to what an earlier attempt of this run counted (the flow retries a failed
    # collection, and removes the file before its first attempt).
    counts: dict[str, dict[str, int]] = read_json(paths.collect_counts, default={})
    try:
        for name, source in sources.items():
            if only and name not in only:
                continue
            held = int(manifest["sources"].get(name, {}).get("rows", 0))
            manifest["sources"][name], read = collect_source(name, source, manifest, paths, params)
            # Recorded per source: a later source failing keeps this one's progress.
            write_json(paths.manifest, manifest)
            earlier = counts.get(name, {"read": 0, "new": 0})
            added = int(manifest["sources"][name]["rows"]) - held
            counts[name] = {"read": earlier["read"] + read, "new": earlier["new"] + added}
            write_json(paths.collect_counts, counts)
    except OSError as exc:
        if is_disk_full(exc):  # named here, where the folder being written is known
            raise DiskFull.of(exc, where=paths.raw) from None
        raise
    finally:  # a failed pull's spool too: on a full disk it holds the space it took
        shutil.rmtree(paths.staging, ignore_errors=True)
    write_rechecks(paths)
    return manifest


def write_rechecks(paths: Paths) -> None:
    """Tell DVC that validate is due while rows wait as "in the future": the file changes
    on every run while any do, so validate runs even with no new data, and checks them
    again (a clock that was behind, now right). With none waiting it stays the same, and
    DVC skips validate as before."""
    from tasks.core import clock
    from tasks.data.ledger import pending_rechecks

    pending = pending_rechecks(paths.validated)
    asked = clock.now().isoformat() if pending else None  # to the microsecond: always new
    write_json(paths.rechecks, {"pending": pending, "asked": asked})


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tasks.core.entry import run_step

    parser = argparse.ArgumentParser(
        prog="python -m tasks.collect", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--source", action="append", help="collect only this source (repeatable)")
    args = parser.parse_args(argv)

    def work() -> None:
        paths = Paths.at()
        run(load_params(paths.params).collect, paths, only=args.source)

    return run_step(work, stage="collect")


if __name__ == "__main__":
    # Run the importable module, not __main__, so log records read "tasks.collect".
    from tasks import collect

    raise SystemExit(collect.main())
