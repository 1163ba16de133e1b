"""The house rules that a reader relies on: README's map names every module, and
importing a module changes nothing (no logging set-up, no environment, no files)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import ROOT


def modules() -> list[Path]:
    return sorted(
        p.relative_to(ROOT)
        for package in ("tasks", "flows")
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    )


def mapped_paths(readme: str) -> set[str]:
    """The paths README's "Where things are" tree names (two spaces per level)."""
    tree = readme.split("## Where things are", 1)[1].split("```")[1]
    named, folders = set(), []
    for line in tree.splitlines():
        found = re.match(r"^( *)(\S+)", line)
        if found:
            folders = folders[: len(found.group(1)) // 2]
            named.add("".join(folders) + found.group(2))
            if found.group(2).endswith("/"):
                folders.append(found.group(2))
    return named


def test_readme_where_things_are_names_every_module() -> None:
    named = mapped_paths((ROOT / "README.md").read_text())
    # A folder named with nothing under it is described as a whole (sources/, demo/).
    whole = {
        n for n in named if n.endswith("/") and not any(m.startswith(n) and m != n for m in named)
    }
    missing = [
        str(m) for m in modules()
        if str(m) not in named and not any(str(m).startswith(f) for f in whole)
    ]  # fmt: skip
    assert not missing, f"README 'Where things are' does not name: {missing}"
    gone = [n for n in named if n.endswith(".py") and not (ROOT / n).exists()]
    assert not gone, f"README 'Where things are' names modules that do not exist: {gone}"


IMPORT_ALL = """
import importlib, json, logging, os, pkgutil, sys
# The libraries may set themselves up (logging, environment) when imported: not ours.
import dvc.repo, matplotlib, mlflow, pandas, pandera.pandas, sklearn.linear_model, torch
from prefect import flow, task
def state():
    loggers = {n: logging.getLogger(n).level for n in ("", "tasks", "flows", "mlflow", "prefect")}
    return {"loggers": loggers, "root_handlers": len(logging.getLogger().handlers),
            "env": dict(os.environ), "files": sorted(os.listdir("."))}
before = state()
import tasks, flows
for package in (tasks, flows):
    for found in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not found.name.endswith("pyfunc_entry"):  # MLflow's models-from-code file
            importlib.import_module(found.name)
after = state()
print(json.dumps({k: [before[k], after[k]] for k in before if before[k] != after[k]}))
"""


@pytest.mark.slow  # starts processes (or trains): make test-fast leaves it out
def test_importing_any_module_changes_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], cwd=tmp_path, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
