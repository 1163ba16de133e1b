"""The house rules that a reader relies on: the code map (docs/development.md) names every
module, every test the docs and the code cite exists, and
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
        for package in ("tasks", "flows", "devstack")
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    )


def mapped_paths(readme: str) -> set[str]:
    """The paths the "Where things are" tree names (two spaces per level)."""
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


CODE_MAP = ROOT / "docs" / "development.md"  # its "Where things are"


def test_the_code_map_names_every_module() -> None:
    named = mapped_paths(CODE_MAP.read_text())
    # A folder named with nothing under it is described as a whole (sources/, demo/).
    whole = {
        n for n in named if n.endswith("/") and not any(m.startswith(n) and m != n for m in named)
    }
    missing = [
        str(m) for m in modules()
        if str(m) not in named and not any(str(m).startswith(f) for f in whole)
    ]  # fmt: skip
    assert not missing, f"{CODE_MAP.name}, 'Where things are', does not name: {missing}"
    gone = [n for n in named if n.endswith(".py") and not (ROOT / n).exists()]
    assert not gone, f"{CODE_MAP.name}, 'Where things are', names modules that do not exist: {gone}"


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
        # MLflow's models-from-code file, and `python -m` entry points, run when imported
        if not found.name.endswith(("pyfunc_entry", "__main__")):
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


def test_every_test_the_code_and_readme_cite_exists() -> None:
    """The docs' "What survives what" and the code's docstrings name tests as proof
    (`test_faults.py::test_...`, `tests/lineage/test_remote.py`, a bare `::test_...` after
    its file): each must exist, so a renamed or removed test cannot leave a claim behind."""
    tests = ROOT / "tests"
    defined = {m for p in tests.rglob("test_*.py")
               for m in re.findall(r"^def (test_\w+)", p.read_text(), re.M)}  # fmt: skip
    files = {p.relative_to(tests).as_posix() for p in tests.rglob("test_*.py")}
    cited = re.compile(r"(?<![\w/.])((?:tests/)?(?:[a-z_]+/)*test_\w+\.py)?::(test_\w+)|"
                       r"(?<![\w/.])((?:tests/)?(?:[a-z_]+/)*test_\w+\.py)\b")  # fmt: skip
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "tasks").rglob("*.py"),
             *(ROOT / "flows").rglob("*.py"), *tests.rglob("*.py")]  # fmt: skip
    missing = []
    for path in texts:
        for found in cited.finditer(path.read_text()):
            file = (found.group(1) or found.group(3) or "").removeprefix("tests/")
            known = not file or file in files or any(f.endswith("/" + file) for f in files)
            if not known or (found.group(2) and found.group(2) not in defined):
                missing.append(f"{path.relative_to(ROOT)}: {found.group(0)}")
    assert not missing, missing
