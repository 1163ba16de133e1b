"""`dvc repro` from a shell whose `python` is not the project's: DVC runs each stage as
`python -m tasks.<step>` with the shell's `python`. With the project's venv beside the code
the stage hands over to it (`.venv/bin/dvc repro` works unactivated); without one, one
line says how to run it, not a ModuleNotFoundError traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.factories import ROOT

# The interpreter the venv was made from: it lacks the project's packages.
BARE = Path(sys.base_prefix) / "bin" / "python3"


def code_copy(dest: Path) -> Path:
    shutil.copytree(ROOT / "tasks", dest / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run_stage_help(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run([str(BARE), "-m", "tasks.train", "--help"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_bare_interpreter_lacks_the_packages() -> None:
    done = subprocess.run([str(BARE), "-c", "import pandas"], capture_output=True, text=True)
    assert done.returncode != 0  # else the tests below prove nothing


def test_without_a_venv_one_line_says_how_to_run_it(tmp_path: Path) -> None:
    done = run_stage_help(code_copy(tmp_path))
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ") and line.endswith(
        "lacks the project's packages (no pandas). Install them with `make install`, then run "
        "`.venv/bin/dvc repro`, or activate the venv first (`. .venv/bin/activate`) and run "
        "`dvc repro`"
    )
    assert "Traceback" not in done.stderr


def test_with_the_projects_venv_the_stage_hands_over_to_it(tmp_path: Path) -> None:
    project = code_copy(tmp_path)
    (project / ".venv").symlink_to(Path(sys.prefix))  # this test run's venv
    done = run_stage_help(project)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m tasks.train" in done.stdout


def test_the_plumber_command_runs_the_code_of_the_checkout_it_is_in(tmp_path: Path) -> None:
    """One venv, two checkouts: `plumber` in (or --root at) the second runs the second's
    code, not the code of the checkout the venv was installed from."""
    other = tmp_path / "second"
    shutil.copytree(ROOT / "flows", other / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    code_copy(other)
    with (other / "flows" / "cli" / "__init__.py").open("a") as cli:
        cli.write('\nprint("the second checkout\'s code", file=sys.stderr)\n')
    plumber = str(Path(sys.executable).parent / "plumber")
    here = subprocess.run([plumber, "--help"], cwd=other, capture_output=True, text=True)
    pointed = subprocess.run([plumber, "--root", str(other), "--help"], cwd=tmp_path,
                             capture_output=True, text=True)  # fmt: skip
    elsewhere = subprocess.run([plumber, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert "the second checkout's code" in here.stderr
    assert "the second checkout's code" in pointed.stderr
    assert "the second checkout's code" not in elsewhere.stderr
    assert elsewhere.returncode == here.returncode == 0
