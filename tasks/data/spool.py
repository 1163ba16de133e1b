"""A source's rows on their way to its partitions: each batch spooled to a file per day
(Arrow, for one run), then merged day by day into the day's Parquet partition."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pyarrow import feather

from tasks.core.config import CollectParams, Source
from tasks.core.io import (
    sha256_file,
    write_parquet,
)
from tasks.data.partitions import (
    DAY,
    drop_empty_meta,
    merge_rows,
    partition_days,
    spool_by_day,
    storable,
    without_files,
)


def spool_batch(
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


@dataclass(frozen=True)
class Merge:
    """How a source's spooled rows merge into its partitions."""

    spool: Path
    out_dir: Path
    source: Source
    replaced: dict[str, list[str]]  # changed files -> the days their earlier version fed
    files_seen: dict[str, dict[str, Any]] | None  # files sources: what each file holds

    def days(self, days: list[str]) -> dict[str, dict[str, Any] | None]:
        """Merge the spooled rows of some days into their partitions; return their
        manifest entries (None: the partition is gone)."""
        snapshot = self.source.partition_by is None  # a snapshot is replaced, not merged
        existing = {
            day: pd.read_parquet(self.out_dir / f"{day}.parquet")
            for day in days
            if not snapshot and (self.out_dir / f"{day}.parquet").exists()
        }
        kept = {
            day: without_files(frame, set(self.replaced), self._columns_of_others(day))
            for day, frame in existing.items()
        }
        old = {day: frame for day, frame in kept.items() if len(frame)}
        # Each day keeps its own columns, in its own order: merged in one pass, days would
        # otherwise share the union of their columns, and a partition's bytes would depend
        # on which days were merged together.
        columns = {day: list(old[day].columns) if day in old else [] for day in days}
        pieces = []
        for day in days:
            for path in sorted((self.spool / day).glob("*.arrow")):
                table = feather.read_table(path)
                columns[day] += [c for c in table.schema.names if c not in columns[day]]
                pieces.append(table.append_column(DAY, pa.array([day] * table.num_rows)))
        new = pa.concat_tables(pieces, promote_options="permissive").to_pandas() if pieces else None
        previous = pd.concat([f.assign(**{DAY: d}) for d, f in old.items()]) if old else None
        key = [DAY, *self.source.key]
        merged = merge_rows(previous, new, key, self.source.watermark)
        entries: dict[str, dict[str, Any] | None] = {f"{d}.parquet": None for d in days}
        for day, rows in merged.groupby(DAY, sort=True) if DAY in merged.columns else []:
            rows = drop_empty_meta(rows[columns[day]].reset_index(drop=True))
            target = self.out_dir / f"{day}.parquet"
            if day not in existing or not rows.equals(existing[day]):  # else keep bytes and mtime
                write_parquet(target, rows)
            entries[target.name] = {"rows": len(rows), "sha256": sha256_file(target),
                                    "bytes": target.stat().st_size}  # fmt: skip
        for name, entry in entries.items():
            if entry is None:
                (self.out_dir / name).unlink(missing_ok=True)
        return entries

    def _columns_of_others(self, day: str) -> list[str] | None:
        """The columns of the files that still feed `day` (None: cannot tell, keep all)."""
        if self.files_seen is None:
            return None
        columns: list[str] = []
        for name, info in self.files_seen.items():
            if name in self.replaced or day not in info.get("partitions", []):
                continue
            if "columns" not in info:
                return None
            columns += info["columns"]
        return columns
