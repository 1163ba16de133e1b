"""Benchmark: the whole pipeline through Prefect and DVC, against the same steps bare.

    python bench/pipeline.py

On two fresh copies of this repository with the demo upstream (2013-01-01..06-30 visible):
three scenarios, each run as `plumber run` in copy A (Prefect in its default mode: the
local server under var/, started once and reused) and as the same step functions called
bare in one fresh process in copy B (the steps the flow actually ran: no Prefect, no DVC,
no retrain policy):

    cold         the first run: collect, validate, featurize, train, evaluate, release
    no-op        nothing new upstream: collect asks the sources; the rest is skipped
    incremental  one more demo day: collect, validate and a retrain

Orchestration overhead = flow wall time - bare wall time, and their ratio. The no-op run
is also put against `python -c "import prefect, dvc.repo"` (goal: <= 3x) and a hello-world
flow against the same server, measured in the same run; the server's one-time start is
printed apart, and added to the cold run for a fresh clone's first run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

BARE = """
import sys, time
from tasks.core.config import load_params
from tasks.core.paths import Paths
from tasks.core.io import write_json
paths = Paths.at(sys.argv[1]); steps = sys.argv[2].split(","); times = {}
params = load_params(paths.params)
for step in steps:
    started = time.perf_counter()
    if step == "collect":
        from tasks import collect; collect.run(params.collect, paths)
    elif step == "validate":
        from tasks import validate; validate.run(params, paths)
    elif step == "featurize":
        from tasks import featurize; featurize.run(params.featurize, paths, params.compute)
    elif step == "train":
        from tasks import train; train.run(params, paths)
    elif step == "evaluate":
        from tasks import evaluate; evaluate.run(params, paths)
    elif step == "release":
        from tasks.release import run as release; release.run(params, paths)
    times[step] = round(time.perf_counter() - started, 2)
write_json(paths.var / "bare_times.json", times)
"""

HELLO = """
from prefect import flow, task
@task
def hello(): return "hello"
@flow
def hello_flow(): return hello()
hello_flow()
"""


def env(api_url: str | None = None) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    if api_url:
        clean["PREFECT_API_URL"] = api_url
    return {**clean, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def timed(args: list[str], cwd: Path, api_url: str | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env(api_url), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{args} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def project(parent: Path, name: str) -> Path:
    from tests.factories import copy_repo

    root = copy_repo(parent / name)
    timed([str(BIN / "plumber"), "demo", "init"], root)
    return root


def flow_run(root: Path) -> tuple[float, dict]:
    wall = timed([str(BIN / "plumber"), "run"], root)
    last = json.loads((root / "var/last_run.json").read_text())
    assert last["state"] == "COMPLETED", last
    # The flow's own report of its stages: the summary artifact's data, kept by the CLI
    # as var/last_summary.json.
    report = json.loads((root / "var/last_summary.json").read_text())
    return wall, report


def bare_run(root: Path, steps: list[str]) -> tuple[float, dict]:
    wall = timed([sys.executable, "-c", BARE, str(root), ",".join(steps)], root)
    return wall, json.loads((root / "var/bare_times.json").read_text())


def scenario(name: str, flow_root: Path, bare_root: Path) -> dict:
    wall, report = flow_run(flow_root)
    ran = [s["stage"] for s in report["stages"] if s["outcome"] == "ran"]
    bare_wall, bare_times = bare_run(bare_root, ran)
    stage_times = {s["stage"]: (s["outcome"], s["seconds"]) for s in report["stages"]}
    print(f"\n{name}: plumber run {wall:.1f} s, the same steps bare {bare_wall:.1f} s "
          f"-> overhead {wall - bare_wall:+.1f} s, ratio {wall / bare_wall:.2f}")  # fmt: skip
    for stage, (outcome, seconds) in stage_times.items():
        bare = f"{bare_times[stage]:.1f} s bare" if stage in bare_times else ""
        print(f"  {stage:<10} {outcome:<10} {seconds:6.1f} s   {bare}")
    print(f"  outside the stages (Prefect, DVC's checks, the retrain policy, imports): "
          f"{wall - sum(s for _, s in stage_times.values()):.1f} s")  # fmt: skip
    return {"flow": wall, "bare": bare_wall}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="plumber-bench-") as tmp:
        flow_root, bare_root = project(Path(tmp), "flow"), project(Path(tmp), "bare")
        try:
            run_scenarios(Path(tmp), flow_root, bare_root)
        finally:
            timed([str(BIN / "plumber"), "server", "stop"], flow_root)


def run_scenarios(tmp: Path, flow_root: Path, bare_root: Path) -> None:
    imports = min(timed([sys.executable, "-c", "import prefect, dvc.repo"], ROOT)
                  for _ in range(3))  # fmt: skip
    server_start = timed([str(BIN / "plumber"), "server", "start"], flow_root)
    api_url = json.loads((flow_root / "var/prefect-server/server.json").read_text())["url"]
    hello = min(timed([sys.executable, "-c", HELLO], tmp, f"{api_url}/api") for _ in range(3))
    print(f"floors: `python -c 'import prefect, dvc.repo'` {imports:.2f} s; a hello-world flow "
          f"against the local Prefect server {hello:.2f} s")  # fmt: skip
    print(f"the local Prefect server's start (once, then reused): {server_start:.1f} s")
    cold = scenario("cold full run (server running)", flow_root, bare_root)
    print(f"  a fresh clone's first run, the server's start included: "
          f"{cold['flow'] + server_start:.1f} s vs bare {cold['bare']:.1f} s -> ratio "
          f"{(cold['flow'] + server_start) / cold['bare']:.2f}")  # fmt: skip
    noop = scenario("no-op run", flow_root, bare_root)
    print(f"  no-op run / import floor: {noop['flow'] / imports:.1f}x (goal <= 3x); "
          f"/ hello-world flow: {noop['flow'] / hello:.2f}x")  # fmt: skip
    db = flow_root / "var/prefect-server/prefect.db"
    before = db.stat().st_size
    runs = 5
    for _ in range(runs):
        timed([str(BIN / "plumber"), "run"], flow_root)
    print(
        f"  Prefect's database grows {(db.stat().st_size - before) / runs / 1e6:.2f} MB per "
        "no-op run until flow.server.keep_runs runs are kept; then older runs are deleted"
    )
    for root in (flow_root, bare_root):
        timed([str(BIN / "plumber"), "demo", "advance", "--days", "1"], root)
    scenario("one-day incremental run", flow_root, bare_root)


if __name__ == "__main__":
    main()
