"""File helpers shared by the steps: atomic writes, checksums, deterministic Parquet."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tasks.core.errors import StepError

if TYPE_CHECKING:  # pandas and pyarrow are imported where Parquet is written: a command
    import pandas as pd  # that only writes JSON (a lock's holder record) stays fast

T = TypeVar("T")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_stale_temps(folder: Path) -> int:
    """Delete what atomic_path leaves behind when a process is killed mid-write
    (no cleanup code runs on SIGKILL); returns how many files were removed."""
    stale = list(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_json(target: Path, data: Any) -> None:
    write_bytes(target, json_bytes(data))


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()


def require(path: Path, made_by: str) -> Path:
    """The path, or a clear error naming the stage that makes it."""
    if not path.exists():
        raise StepError(f"{path} is missing: run the {made_by} stage first (dvc repro {made_by})")
    return path


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def write_parquet(target: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` so that equal frames give equal bytes (no index, fixed options)."""
    write_bytes(target, parquet_bytes(frame))


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as Parquet: equal frames give equal bytes, wherever they are made."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The pandas metadata kept in the schema depends only on the locked versions and
    # the dtypes, so equal frames still give equal bytes.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return bytes(sink.getvalue())


def write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(**what: Any) -> str:
    """SHA-256 of JSON-able values: what a reused output was made from."""
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def code_digest(*modules: Path) -> str:
    """SHA-256 of source files: an edit to any of them makes outputs built from them stale."""
    digest = hashlib.sha256()
    for path in modules:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def replace_dir(staged: Path, target: Path) -> None:
    """Swap a fully written folder into place; the old one is removed afterwards."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (a reused output costs no bytes), or a copy
    where links are not possible. Files are only ever replaced, never written in place,
    so a link never lets one change reach the other."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield from ``items`` while a background thread already fetches the next ones.

    Reading a source (the database driver, the network) releases the GIL, so it
    overlaps with the caller's work on the current item. At most ``depth`` items wait
    in the queue, so memory stays bounded. An error in the producer is raised here.
    """
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(("error", exc))

    worker = threading.Thread(target=produce, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join(timeout=5)
