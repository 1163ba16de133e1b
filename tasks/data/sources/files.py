"""New and changed files from a drop folder.

A file is fingerprinted by size and SHA-256 (recorded in the manifest, so it depends on
content only). Files whose size and mtime match a local stat cache are not hashed again,
and only files whose hash changed are read, as rsync does.

CSV is read as text: a CSV carries no types, so validate parses every value and
quarantines the ones that do not parse, instead of one bad cell changing a column's type.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.errors import SourceError
from tasks.core.io import sha256_file

log = logging.getLogger(__name__)

Fingerprint = dict[str, int | str]  # {"size": int, "sha256": str}: what the manifest keeps
StatCache = dict[str, list[int | str]]  # name -> [size, mtime_ns, sha256]: local, under var/


@dataclass(frozen=True)
class Scan:
    current: dict[str, Fingerprint]  # every matching file now in the folder
    changed: list[str]  # new or with other content than last time, sorted
    stat_cache: StatCache  # to skip hashing unchanged files next time


def scan_folder(
    folder: Path, pattern: str, seen: dict[str, Fingerprint], stat_cache: StatCache | None = None
) -> Scan:
    """Compare the folder with the fingerprints recorded last time.

    A file whose size and mtime match the local stat cache is not hashed again. The
    cache is a shortcut only: without it every file is hashed, with the same result.
    """
    if not folder.is_dir():
        raise SourceError(f"folder {folder} does not exist")
    stat_cache = stat_cache or {}
    current: dict[str, Fingerprint] = {}
    new_cache: StatCache = {}
    changed: list[str] = []
    for path in sorted(p for p in folder.glob(pattern) if p.is_file()):
        stat = path.stat()
        cached = stat_cache.get(path.name)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            digest = str(cached[2])
        else:
            digest = sha256_file(path)
        new_cache[path.name] = [stat.st_size, stat.st_mtime_ns, digest]
        current[path.name] = {"size": stat.st_size, "sha256": digest}
        before = seen.get(path.name)
        if not before or before["sha256"] != digest:
            changed.append(path.name)
    return Scan(current=current, changed=changed, stat_cache=new_cache)


def read_file(path: Path) -> pd.DataFrame:
    """One dropped file as a frame; a clear SourceError when it cannot be read."""
    if path.stat().st_size == 0:
        raise SourceError(f"{path.name} is empty (0 bytes); an upload may still be running")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        try:
            return pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{path.name} is not a readable Parquet file: {exc}") from None
    raise SourceError(f"{path.name}: unsupported file type {suffix!r} (csv or parquet)")


def no_rows(file_name: str) -> str:
    """What to say of a file that holds a header and no rows: it names the day the file
    stands for, where its name holds one, since that day then has no data from it."""
    day = re.search(r"\d{4}-\d{2}-\d{2}", file_name)
    for_day = f" for {day.group()}" if day else ""
    return f"{file_name} has a header and no rows: no data{for_day} from it"


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        # dtype=str keeps every cell as text; "NA" and empty cells become missing.
        frame = pd.read_csv(path, dtype=str, encoding="utf-8", keep_default_na=True)
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise SourceError(
            f"{path.name} is not UTF-8 text: byte {byte:#04x} at offset {exc.start}"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as exc:
        raise SourceError(f"{path.name} is not a readable CSV file: {exc}".strip()) from None
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed:")]
    if unnamed:
        raise SourceError(f"{path.name}: header has empty column names ({len(unnamed)})")
    return frame
