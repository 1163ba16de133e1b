"""Each part of DVC that tasks/core/dvc_internals.py relies on, against the installed DVC on
a small real repository: a DVC upgrade that changes one fails the test named after it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks.core import dvc_internals

# Each test makes a DVC repository and runs DVC in it: `make test`, not test-fast.
pytestmark = pytest.mark.slow

DVC_YAML = """
stages:
  first:
    cmd: python -c "open('a.txt','w').write(open('in.txt').read())"
    deps: [in.txt]
    outs: [a.txt]
  second:
    cmd: python -c "open('b.txt','w').write(open('a.txt').read() * 2)"
    deps: [a.txt, code.py]
    outs: [b.txt]
"""


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "DVC_NO_ANALYTICS": "1"})  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert dvc(tmp_path, "init", "-q").returncode == 0
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "in.txt").write_text("x")
    (tmp_path / "code.py").write_text("# v1\n")
    done = dvc(tmp_path, "repro")
    assert done.returncode == 0, done.stderr
    return tmp_path


def hold_repo_lock(repo: Path) -> subprocess.Popen[str]:
    """Another process holding DVC's repository lock, as a running DVC command does."""
    script = textwrap.dedent(f"""
        import sys, time, zc.lockfile
        lock = zc.lockfile.LockFile({str(dvc_internals.repo_lock(repo))!r})
        print("held", flush=True)
        time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_plan_repro_orders_the_stages_dependencies_first(repo: Path) -> None:
    assert dvc_internals.stage_order(repo) == ["first", "second"]


def test_stage_changed_follows_dvc_lock(repo: Path) -> None:
    assert not dvc_internals.stage_changed(repo, "second")
    (repo / "code.py").write_text("# v2\n")
    assert dvc_internals.stage_changed(repo, "second")
    assert not dvc_internals.stage_changed(repo, "first")


def test_drift_names_changed_code_and_commands_not_data_of_other_stages(repo: Path) -> None:
    assert dvc_internals.drift(repo, ["first", "second"]) == []
    (repo / "code.py").write_text("# v2\n")
    (repo / "a.txt").write_text("made by hand")  # data another stage makes: not drift
    yaml = (repo / "dvc.yaml").read_text().replace("* 2", "* 3")
    (repo / "dvc.yaml").write_text(yaml)
    assert dvc_internals.drift(repo, ["second"]) == [
        "second: its command",
        "second: code.py changed",
    ]


def test_the_repository_lock_names_its_holder_and_is_taken_only_when_free(repo: Path) -> None:
    assert dvc_internals.repo_lock_holder(repo) is None
    with dvc_internals.holding_repo_lock(repo) as held:
        assert held
    holder = hold_repo_lock(repo)
    try:
        assert dvc_internals.repo_lock_holder(repo) == str(holder.pid)
        with dvc_internals.holding_repo_lock(repo) as held:
            assert not held
    finally:
        holder.kill()
        holder.communicate()
    assert dvc_internals.repo_lock_holder(repo) is None


def test_the_rwlock_file_as_dvc_writes_it(repo: Path) -> None:
    from dvc.fs import LocalFileSystem
    from dvc.rwlock import rwlock

    tmp_dir = str(repo / ".dvc" / "tmp")
    out = str(repo / "b.txt")
    with rwlock(tmp_dir, LocalFileSystem(), "dvc repro second", [str(repo / "a.txt")], [out],
                False):  # fmt: skip
        assert dvc_internals.rwlock_holders(repo) == [(os.getpid(), "dvc repro second")]
    assert dvc_internals.rwlock_holders(repo) == []


def test_dvc_words_a_lock_race_as_expected(repo: Path) -> None:
    holder = hold_repo_lock(repo)
    try:
        done = dvc(repo, "repro")  # DVC retries for a few seconds, then gives up
    finally:
        holder.kill()
        holder.communicate()
    assert done.returncode != 0
    assert dvc_internals.lock_race((done.stdout + done.stderr).splitlines()), done.stderr


def test_the_reason_of_a_dvc_failure_is_its_error_line(repo: Path) -> None:
    """(Its footer, "Having any troubles?", after an unexpected error, is left out too:
    tests/lineage/test_remote.py::test_an_object_store_that_is_down_is_named_with_its_address.)"""
    done = dvc(repo, "push")  # no remote configured
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert dvc_internals.reason(output + f"\n{dvc_internals.FOOTER} ...\n", 1) == (
        "failed to push data to the cloud - config file error: no remote specified in "
        f"{repo}. Create a default remote with"
    ), output
