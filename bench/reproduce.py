"""Benchmark: `plumber reproduce` against the stages it reruns, and from a fresh clone.

    python bench/reproduce.py [REF]     # in a project with a recorded release (`make run`)

Measured in the same run, on the same machine:

- floor: featurize, train and evaluate run again in place on the same inputs
  (`dvc repro --force --downstream featurize` in a scratch clone of this project, its data
  checked out from the DVC cache): what the rebuild itself costs;
- `plumber reproduce REF` from this project: a workspace, the record read from MLflow,
  the inputs fetched from the DVC remote, the same stages, the comparison;
- the same from a second fresh clone (`git clone`, empty var/ and DVC cache) pointed at
  this project's registry: the result must be "identical" there too.

Prints the seconds of each, the ratio of reproduce to the floor, and the bytes fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    done = subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done


def timed(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = sh(cwd, *args, env=env)
    return time.perf_counter() - started, done.stdout


def floor(project: Path, scratch: Path) -> float:
    """featurize, train, evaluate again in a scratch clone holding the same inputs."""
    clone = scratch / "floor"
    sh(scratch, "git", "clone", "-q", str(project), str(clone))
    for name in ("params.yaml", "dvc.lock"):
        shutil.copy(project / name, clone / name)
    (clone / ".dvc/config.local").write_text(
        f"[cache]\n    dir = {project / '.dvc' / 'cache'}\n"  # the same objects, no copy
    )
    sh(clone, "dvc", "checkout", "--quiet", "data/validated")
    (clone / ".dvc/config.local").unlink()  # the rebuild writes to the clone's own cache
    seconds, _ = timed(clone, "dvc", "repro", "--force", "--downstream", "featurize",
                       env={"MLFLOW_TRACKING_URI": f"sqlite:///{clone}/var/mlflow.db"})  # fmt: skip
    return seconds


def main() -> None:
    ref = sys.argv[1] if len(sys.argv) > 1 else "champion"
    project = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="bench-reproduce-") as tmp:
        scratch = Path(tmp)
        base = floor(project, scratch)
        here, out = timed(project, "plumber", "reproduce", ref, "--json")
        [report] = json.loads(out)
        clone = scratch / "fresh"
        sh(scratch, "git", "clone", "-q", str(project), str(clone))
        shutil.copy(project / "params.yaml", clone / "params.yaml")
        shared = {"MLFLOW_TRACKING_URI": f"sqlite:///{project / 'var/mlflow/mlflow.db'}"}
        there, out = timed(clone, "plumber", "reproduce", ref, "--json", env=shared)
        [fresh] = json.loads(out)
    print(f"floor: featurize+train+evaluate rerun in place   {base:8.1f} s")
    print(f"plumber reproduce {ref} (this project)        {here:8.1f} s  "
          f"ratio {here / base:.2f}  {report['fetched_bytes'] / 1e6:.1f} MB fetched  "
          f"{'identical' if report['identical'] else 'DIFFERS'}")  # fmt: skip
    print(f"plumber reproduce {ref} (second fresh clone)  {there:8.1f} s  "
          f"ratio {there / base:.2f}  {fresh['fetched_bytes'] / 1e6:.1f} MB fetched  "
          f"{'identical' if fresh['identical'] else 'DIFFERS'}")  # fmt: skip


if __name__ == "__main__":
    main()
