"""dvc.yaml's code dependencies are right by construction: every module a stage runs (its
import closure inside this project, lazy imports included) lies under one of the stage's
deps, and an edit to any of them makes `dvc status` report the stage changed."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml

from tests.factories import ROOT


def module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def project_imports(root: Path, file: Path) -> set[str]:
    """The tasks.* modules `file` imports anywhere in its body (lazy imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # submodules
    return {n for n in names if n.split(".")[0] == "tasks" and module_file(root, n)}


def import_closure(root: Path, module: str) -> set[Path]:
    """Every file of this project that `python -m module` may execute, relative to root."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # packages' __init__
        file = module_file(root, name)
        assert file is not None, name
        todo += project_imports(root, file)
    return {module_file(root, n).relative_to(root) for n in seen}  # type: ignore[union-attr]


def stages(root: Path) -> dict[str, dict]:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    command = stage["cmd"].split()
    assert command[:2] == ["python", "-m"], stage["cmd"]
    return command[2]


def code_deps(stage: dict) -> list[str]:
    return [d for d in stage["deps"] if d.startswith("tasks")]


def covered(file: Path, deps: list[str]) -> bool:
    return any(file == Path(d) or Path(d) in file.parents for d in deps)


@pytest.mark.parametrize("name", list(stages(ROOT)))
def test_every_module_a_stage_runs_is_among_its_deps(name: str) -> None:
    stage = stages(ROOT)[name]
    closure = import_closure(ROOT, stage_module(stage))
    missing = sorted(str(f) for f in closure if not covered(f, code_deps(stage)))
    assert not missing, f"dvc.yaml: stage {name} runs {missing} but does not list them in deps"


def test_the_closure_follows_lazy_imports_and_packages(tmp_path: Path) -> None:
    """The checker itself: a module imported inside a function, and the __init__ of each
    package on the way, are part of what runs."""
    (tmp_path / "tasks/sub").mkdir(parents=True)
    (tmp_path / "tasks/__init__.py").write_text("")
    (tmp_path / "tasks/sub/__init__.py").write_text("")
    (tmp_path / "tasks/sub/deep.py").write_text("X = 1\n")
    (tmp_path / "tasks/step.py").write_text("def main():\n    from tasks.sub import deep\n")
    assert import_closure(tmp_path, "tasks.step") == {
        Path("tasks/__init__.py"), Path("tasks/step.py"),
        Path("tasks/sub/__init__.py"), Path("tasks/sub/deep.py"),
    }  # fmt: skip
    assert not covered(Path("tasks/sub/deep.py"), ["tasks/step.py", "tasks/__init__.py"])
    assert covered(Path("tasks/sub/deep.py"), ["tasks/sub"])


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's stages and code whose dvc.lock records the code as it is.

    The stages' outputs are empty stand-ins: only the code deps are under test, and
    `dvc commit` records the lock without running anything."""
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("deps")
    shutil.copytree(ROOT / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, root / name)
    Repo.init(str(root), no_scm=True)
    for stage in stages(root).values():
        for dep in stage["deps"]:
            if not dep.startswith("tasks"):
                (root / dep).parent.mkdir(parents=True, exist_ok=True)
        for out in stage.get("outs", []) + stage.get("metrics", []):
            path = root / (next(iter(out)) if isinstance(out, dict) else out)
            if path.suffix:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("{}")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "stand-in").write_text("")
    with Repo(str(root)) as repo:
        repo.commit(force=True)
    return root


def changed_stages(root: Path) -> set[str]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        report = repo.status()
    return {
        name.split(":")[-1]
        for name, changes in report.items()
        if any("changed deps" in c for c in changes if isinstance(c, dict))
    }


@pytest.mark.slow  # starts processes (or trains): make test-fast leaves it out
def test_an_edit_to_any_module_a_stage_imports_makes_dvc_rerun_that_stage(committed) -> None:
    assert changed_stages(committed) == set()  # the stand-in lock matches the code
    runs = {
        name: import_closure(committed, stage_module(s)) for name, s in stages(committed).items()
    }
    for module in sorted(set().union(*runs.values())):
        file = committed / module
        before = file.read_text()
        file.write_text(before + "\n# an edit\n")
        try:
            expected = {name for name, closure in runs.items() if module in closure}
            assert expected <= changed_stages(committed), f"edited {module}"
        finally:
            file.write_text(before)
    assert changed_stages(committed) == set()
