"""The working copy read as commit + diff, and written elsewhere, never touching it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tasks.lineage import git


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout  # fmt: skip


@pytest.fixture
def work(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg/mod.py").write_text("x = 1\n")
    (root / "params.yaml").write_text("lr: 0.1\n")
    (root / ".gitignore").write_text("/var/\n")
    sh(root, "init", "-q")
    sh(root, "add", "-A")
    sh(root, "commit", "-qm", "code")
    return root


def state(root: Path) -> tuple[str, str, str, str]:
    """HEAD, the branch, the index and the status: what a record must never change."""
    return (sh(root, "rev-parse", "HEAD"), sh(root, "branch", "--show-current"),
            sh(root, "ls-files", "-s"), sh(root, "status", "--porcelain"))  # fmt: skip


def test_a_clean_copy_is_its_commit(work: Path) -> None:
    shot = git.snapshot(work)
    assert shot.commit == sh(work, "rev-parse", "HEAD").strip()
    assert not shot.dirty and shot.tree == sh(work, "rev-parse", "HEAD^{tree}").strip()


def test_changes_new_files_and_outputs(work: Path, tmp_path: Path) -> None:
    (work / "pkg/mod.py").write_text("x = 2\n")  # tracked, changed
    (work / "pkg/new.py").write_text("y = 3\n")  # untracked: part of the code too
    (work / "var").mkdir()
    (work / "var/state.db").write_bytes(b"\0ignored")  # ignored by git
    (work / "dvc.lock").write_text("stages: {}\n")  # an output the record keeps itself
    (work / "blob.bin").write_bytes(bytes(range(256)))  # binary
    before = state(work)
    shot = git.snapshot(work, leave_out=["dvc.lock"])
    assert state(work) == before  # index, HEAD, branch and files as they were
    assert shot.dirty
    diff = shot.diff.decode(errors="replace")
    assert "pkg/mod.py" in diff and "pkg/new.py" in diff and "blob.bin" in diff
    assert "dvc.lock" not in diff and "var/state.db" not in diff

    dest = tmp_path / "rebuilt"
    dest.mkdir()
    git.materialize(work, shot.commit, shot.diff, dest)
    for name in ("pkg/mod.py", "pkg/new.py", "blob.bin", "params.yaml"):
        assert (dest / name).read_bytes() == (work / name).read_bytes(), name
    assert not (dest / "dvc.lock").exists() and not (dest / "var").exists()


def test_data_versions_are_commits_on_their_own_branch(work: Path) -> None:
    (work / "dvc.lock").write_text("stages: {one: {}}\n")
    before = state(work)
    first = git.snapshot(work, leave_out=["dvc.lock"], extra={"dvc.lock": b"v1\n"})
    one = git.commit_to_branch(work, "plumber/data", first, "first")
    (work / "pkg/mod.py").write_text("x = 5\n")  # a later run on uncommitted code
    second = git.snapshot(work, leave_out=["dvc.lock"], extra={"dvc.lock": b"v2\n"})
    two = git.commit_to_branch(work, "plumber/data", second, "second")
    assert state(work)[:3] == before[:3]  # HEAD, branch and index never moved
    assert sh(work, "rev-parse", "plumber/data").strip() == two
    assert sh(work, "show", f"{one}:dvc.lock") == "v1\n"
    assert sh(work, "show", f"{two}:dvc.lock") == "v2\n"
    assert sh(work, "show", f"{two}:pkg/mod.py") == "x = 5\n"  # the code as it ran
    parents = sh(work, "rev-list", "--parents", "-n1", two).split()[1:]
    assert parents == [one, first.commit]  # the data history, then the code's commit


def test_a_commit_this_clone_lacks_is_asked_of_its_remote(work: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    sh(tmp_path, "clone", "-q", str(work), str(clone))
    (work / "later.txt").write_text("later\n")
    sh(work, "add", "-A")
    sh(work, "commit", "-qm", "later")
    later = sh(work, "rev-parse", "HEAD").strip()
    assert not git.has_commit(clone, later)
    assert git.fetch_commit(clone, later) and git.has_commit(clone, later)
    assert not git.fetch_commit(clone, "0123456789" * 4)


def test_a_record_needs_a_commit(tmp_path: Path) -> None:
    from tasks.core.errors import StepError

    with pytest.raises(StepError, match="is not a git repository: a record names the commit"):
        git.snapshot(tmp_path)
    sh(tmp_path, "init", "-q")
    with pytest.raises(StepError, match="has no commit yet"):
        git.snapshot(tmp_path)


def test_a_fresh_clone_after_a_run_is_clean(tmp_path: Path) -> None:
    """What the stages write, DVC's .gitignore files beside them included, is output."""
    from tasks.lineage.record import outputs
    from tests.factories import copy_repo

    repo = copy_repo(tmp_path)
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models/.gitignore").write_text("/model.pt\n")
    (repo / "models/train.json").write_text("{}\n")
    (repo / "dvc.lock").write_text("stages: {}\n")
    assert "models/.gitignore" in outputs(repo)
    assert not git.snapshot(repo, leave_out=outputs(repo)).dirty
