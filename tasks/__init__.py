"""Plumber's steps and their building blocks. Never imports Prefect."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

_HANDED_OVER = "PLUMBER_PROJECT_PYTHON"


def _project_python() -> None:
    """`dvc repro` runs each stage's `python -m tasks.<step>` with whatever `python` its
    shell finds, which is not the project's interpreter when DVC was started as
    `.venv/bin/dvc repro` without activating the venv. Such a `python` hands the stage
    over to the project's venv; with none, one line says how to run it."""
    if sys.argv[:1] != ["-m"] or importlib.util.find_spec("pandas") is not None:
        return  # imported, not run as `python -m tasks.<step>`; or the packages are here
    venv = Path(__file__).resolve().parents[1] / ".venv"
    python = venv / "bin" / "python"
    if python.exists() and Path(sys.prefix) != venv and not os.environ.get(_HANDED_OVER):
        os.environ[_HANDED_OVER] = "1"
        os.execv(python, [str(python), *sys.orig_argv[1:]])
    sys.stderr.write(
        f"error: {sys.executable} lacks the project's packages (no pandas). Install them "
        "with `make install`, then run `.venv/bin/dvc repro`, or activate the venv first "
        "(`. .venv/bin/activate`) and run `dvc repro`\n"
    )
    raise SystemExit(1)


_project_python()
