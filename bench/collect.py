"""Benchmark: collect + validate from a synthetic SQL source, against a floor.

    python bench/collect.py              # 1M rows
    python bench/collect.py --big        # 1M and 10M rows: peak RSS must not grow with the table
    python bench/collect.py --rows 200000

The floor, measured in the same run on the same table, only reads it in streamed chunks
and writes each chunk to Parquet. Each phase runs in a fresh process so its peak RSS is
its own. Goals: collect + validate throughput >= 0.5 x the floor; peak RSS at 10M rows
<= 1.5 x the peak at 1M (streaming, not loading whole tables).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.demo.upstream import flights_table  # noqa: E402

FLOOR = """
import sys, pandas as pd, sqlalchemy as sa, pyarrow as pa, pyarrow.parquet as pq
url, out, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = sa.create_engine(url)
with engine.connect().execution_options(stream_results=True) as conn:
    for i, frame in enumerate(pd.read_sql(sa.text("SELECT * FROM flights"), conn, chunksize=chunk)):
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), f"{out}/{i:06d}.parquet",
                       compression="zstd")
"""


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    peak_rss_mb: float


def timed(name: str, args: list[str], cwd: Path) -> Phase:
    """Run a command in a fresh process; its wall time and its own peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(
            f"{name} failed:\n{proc.stderr.read().decode()[-2000:] if proc.stderr else ''}"
        )
    return Phase(name, seconds, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def build_source(db: Path, rows: int, rows_per_day: int) -> None:
    """A flights table of `rows` rows, `rows_per_day` a day, typed as the demo's."""
    engine = sa.create_engine(f"sqlite:///{db}")
    flights_table("flights").create(engine)
    engine.dispose()
    columns = [c.name for c in flights_table("flights").columns]
    rng = np.random.default_rng(0)
    start = dt.date(2000, 1, 1)
    conn = sqlite3.connect(db)
    for first in range(0, rows, rows_per_day):
        n = min(rows_per_day, rows - first)
        day = start + dt.timedelta(days=first // rows_per_day)
        hour = rng.integers(5, 19, n)  # +5 h to UTC stays within the day
        delay = rng.normal(10, 30, n).round()
        stamp = [f"{day} {h + 5:02d}:00:00.000000" for h in hour]  # EST as naive UTC
        seen = f"{day + dt.timedelta(days=1)} 05:00:00.000000"
        values = {
            "year": [day.year] * n, "month": [day.month] * n, "day": [day.day] * n,
            "sched_dep_time": (hour * 100).tolist(), "sched_arr_time": (hour * 100 + 200).tolist(),
            "flight": np.arange(1, n + 1).tolist(), "hour": hour.tolist(), "minute": [0] * n,
            "dep_time": (hour * 100 + 10.0).tolist(), "dep_delay": delay.tolist(),
            "arr_time": (hour * 100 + 215.0).tolist(), "arr_delay": (delay + 5).tolist(),
            "air_time": rng.integers(40, 400, n).astype(float).tolist(),
            "distance": rng.integers(100, 2500, n).astype(float).tolist(),
            "carrier": rng.choice(["AA", "UA", "DL"], n).tolist(), "tailnum": ["N101AA"] * n,
            "origin": rng.choice(["EWR", "JFK", "LGA"], n).tolist(),
            "dest": rng.choice(["ATL", "ORD"], n).tolist(),
            "time_hour": stamp, "updated_at": [seen] * n,
        }  # fmt: skip
        conn.executemany(
            f"INSERT INTO flights ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            zip(*(values[c] for c in columns), strict=True),
        )
    conn.commit()
    conn.close()


def build_project(root: Path, rows: int, rows_per_day: int, chunk_rows: int) -> str:
    upstream = root / "upstream"
    upstream.mkdir(parents=True)
    db = upstream / "flights.db"
    build_source(db, rows, rows_per_day)
    (upstream / "airports.csv").write_text("faa,name,lat,lon,alt,tz,dst,tzone\n" + "".join(
        f"{c},{c},40,-74,10,-5,A,America/New_York\n" for c in ("EWR", "JFK", "LGA", "ATL", "ORD")
    ))  # fmt: skip
    (upstream / "airlines.csv").write_text("carrier,name\nAA,American\nUA,United\nDL,Delta\n")
    ref = {"kind": "files", "path": str(upstream)}
    key = ["year", "month", "day", "carrier", "flight", "origin"]
    flights = {
        "kind": "sql", "url_env": "BENCH_UNSET", "default_url": f"sqlite:///{db}",
        "table": "flights", "key": key, "watermark": "updated_at", "partition_by": "time_hour",
        "schema": "flights",
    }  # fmt: skip
    params = yaml.safe_load((ROOT / "params.yaml").read_text())  # every default, then ours
    params["collect"].update(
        chunk_rows=chunk_rows,
        sources={
            "flights": flights,
            "airports": {**ref, "glob": "airports.csv", "key": ["faa"], "schema": "airports"},
            "airlines": {**ref, "glob": "airlines.csv", "key": ["carrier"], "schema": "airlines"},
        },
    )
    params["validate"].update(max_reject_rate=0.05, batch_rows=chunk_rows * 4,
                              extra_airport_codes=[])  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return f"sqlite:///{db}"


def measure(rows: int, rows_per_day: int, chunk_rows: int, workdir: Path) -> dict[str, Phase]:
    root = workdir / f"rows-{rows}"
    url = build_project(root, rows, rows_per_day, chunk_rows)
    floor_out = root / "floor"
    floor_out.mkdir()
    py = sys.executable
    return {
        "floor": timed("floor", [py, "-c", FLOOR, url, str(floor_out), str(chunk_rows)], root),
        "collect": timed("collect", [py, "-m", "tasks.collect"], root),
        "validate": timed("validate", [py, "-m", "tasks.validate"], root),
    }


def report(rows: int, phases: dict[str, Phase]) -> float:
    """Print the figures of one table size; return its peak RSS."""
    floor = phases["floor"]
    both = phases["collect"].seconds + phases["validate"].seconds
    peak = max(phases["collect"].peak_rss_mb, phases["validate"].peak_rss_mb)
    print(f"\n{rows:,} rows")
    lines = [(p.name, p.seconds, p.peak_rss_mb) for p in phases.values()]
    for name, seconds, rss in [*lines, ("collect+validate", both, peak)]:
        rate = rows / seconds
        print(f"  {name:<18}{seconds:8.1f} s {rate:12,.0f} rows/s  peak RSS {rss:7.0f} MB")
    print(f"  throughput vs floor: {floor.seconds / both:.2f}  (goal >= 0.50)")
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big", action="store_true", help="also 10x the rows; compare peak RSS")
    parser.add_argument("--rows-per-day", type=int, default=10_000)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plumber-bench-") as tmp:
        sizes = [args.rows, args.rows * 10] if args.big else [args.rows]
        peaks = []
        for rows in sizes:
            peaks.append(report(rows, measure(rows, args.rows_per_day, args.chunk_rows, Path(tmp))))
        if args.big:
            growth = peaks[1] / peaks[0]
            print(f"\npeak RSS {sizes[1]:,} / {sizes[0]:,} rows: {growth:.2f}  (goal <= 1.50)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
