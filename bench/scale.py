"""Benchmark: the data stages' time and peak memory, cold and for one new day.

    python bench/scale.py [--now 2013-07-01]

In a fresh copy of this repository with the demo upstream (days before --now visible), each
data stage runs as DVC runs it, `python -m tasks.<stage>` in a fresh process: collect,
validate, featurize, cold (nothing collected yet); then `plumber demo advance --days 1` and
the same three again. Printed per stage: wall seconds and the process's peak RSS, and the
one-day run against the cold one (the floor, measured in the same run). Issue 15's goal at
10x the data: one day <= 5% of cold, peak memory at 10x <= 1.5x that at 1x; this measures
the demo's 1x, the floor those are judged against.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
STAGES = ("collect", "validate", "featurize")

# One stage in this process, as `python -m tasks.<stage>` runs it, then its peak RSS.
MEASURED = """
import importlib, json, resource, sys, time
stage = importlib.import_module(f"tasks.{sys.argv[1]}")
started = time.perf_counter()
code = stage.main([])
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
print(json.dumps({"code": code, "seconds": seconds, "peak_mb": peak_mb}))
"""


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**clean, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def stage(name: str, cwd: Path) -> dict[str, float]:
    result = json.loads(run([sys.executable, "-c", MEASURED, name], cwd).splitlines()[-1])
    if result["code"] != 0:
        raise SystemExit(f"stage {name} exited {result['code']}")
    return {"seconds": float(result["seconds"]), "peak_mb": float(result["peak_mb"])}


def rows_of(cwd: Path) -> int:
    manifest = json.loads((cwd / "data/raw/manifest.json").read_text())
    return sum(int(entry["rows"]) for entry in manifest["sources"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--now", default="2013-07-01", help="the demo's first invisible day")
    args = parser.parse_args()
    from tests.factories import copy_repo

    with tempfile.TemporaryDirectory(prefix="plumber-bench-scale-") as tmp:
        repo = copy_repo(Path(tmp))
        run([str(BIN / "plumber"), "demo", "init", "--now", args.now], repo)
        cold = {name: stage(name, repo) for name in STAGES}
        rows = rows_of(repo)
        run([str(BIN / "plumber"), "demo", "advance", "--days", "1"], repo)
        day = {name: stage(name, repo) for name in STAGES}
        new_rows = rows_of(repo) - rows

    print(f"demo upstream before {args.now}: {rows:,} raw rows; one new day: {new_rows:,} rows")
    print(f"{'stage':<11}{'cold s':>9}{'cold MB':>9}{'day s':>9}{'day MB':>9}{'day/cold':>10}")
    for name in STAGES:
        c, d = cold[name], day[name]
        print(f"{name:<11}{c['seconds']:>9.1f}{c['peak_mb']:>9.0f}{d['seconds']:>9.1f}"
              f"{d['peak_mb']:>9.0f}{d['seconds'] / c['seconds']:>10.2f}")  # fmt: skip
    total_cold = sum(c["seconds"] for c in cold.values())
    total_day = sum(d["seconds"] for d in day.values())
    print(f"{'all three':<11}{total_cold:>9.1f}{'':>9}{total_day:>9.1f}{'':>9}"
          f"{total_day / total_cold:>10.2f}   (issue 15's goal at 10x: <= 0.05)")  # fmt: skip


if __name__ == "__main__":
    main()
