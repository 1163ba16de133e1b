"""File helpers: atomic writes, deterministic Parquet, prefetching."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.io import atomic_path, prefetched, remove_stale_temps, write_parquet
from tests.factories import wait_until


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]


def test_stale_temps_of_a_killed_write_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".2013-03-06.parquet.19wgja5j.tmp").write_bytes(b"PAR1 half")
    (tmp_path / "2013-03-06.parquet").write_bytes(b"whole")
    assert remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["2013-03-06.parquet"]
    assert remove_stale_temps(tmp_path / "missing") == 0


def test_equal_frames_give_equal_parquet_bytes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    write_parquet(tmp_path / "1.parquet", frame)
    write_parquet(tmp_path / "2.parquet", frame.copy())
    assert (tmp_path / "1.parquet").read_bytes() == (tmp_path / "2.parquet").read_bytes()


def test_prefetched_keeps_order_and_reads_ahead_by_one() -> None:
    produced: list[int] = []

    def items():
        for i in range(5):
            produced.append(i)
            yield i

    seen = []
    for item in prefetched(items()):
        # While item i is worked on, the next one is fetched (waited for, however slow the
        # machine), and never more than one in the queue and one in hand beyond it.
        assert wait_until(lambda item=item: len(produced) >= min(item + 2, 5), timeout=30)
        seen.append((item, len(produced)))
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert all(done <= item + 3 for item, done in seen)


def test_prefetched_raises_the_producers_error() -> None:
    def items():
        yield 1
        raise ValueError("upstream broke")

    got = []
    with pytest.raises(ValueError, match="upstream broke"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1]


def test_prefetched_stops_the_producer_when_the_consumer_stops() -> None:
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    stream = prefetched(endless())
    assert next(stream) == 0
    stream.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
