"""Who holds the repository: another plumber run, or a DVC command; exit 75 names it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from flows.dvc_waits import wait_for_dvc
from tasks.core.errors import EXIT_BUSY, Busy
from tasks.core.locks import run_lock
from tasks.core.paths import Paths
from tests.factories import ROOT, kill


def _hold_run_lock(root: Path) -> subprocess.Popen[str]:
    """Another process holding var/run.lock, as a running `plumber run` does."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from tasks.core.locks import run_lock; "
         "from tasks.core.paths import Paths\n"
         f"with run_lock(Paths.at({str(root)!r}), 5):\n print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_held_run_lock_names_its_holder(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path)
    holder = _hold_run_lock(tmp_path)
    try:
        with pytest.raises(Busy, match=f"a plumber run \\(pid {holder.pid}, since "):
            run_lock(paths, timeout=0.2).__enter__()
    finally:
        kill(holder)
    with run_lock(paths, timeout=2):  # released when its holder died
        pass


def test_the_run_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path)
    holder_file = paths.var / "run.holder.json"
    with run_lock(paths, timeout=1):  # `plumber run` ...
        with run_lock(paths, timeout=0):  # ... and its flow
            assert holder_file.exists()
        assert holder_file.exists()  # the inner exit leaves the outer's record
    assert not holder_file.exists()


def test_plumber_run_exits_75_while_another_run_holds_the_repository(tmp_path, capsys) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["flow"]["lock_timeout_seconds"] = 0.3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    holder = _hold_run_lock(tmp_path)
    try:
        assert main(["--root", str(tmp_path), "run"]) == EXIT_BUSY
    finally:
        kill(holder)
    err = capsys.readouterr().err
    # It says at once whom it waits for and how long, then gives up naming the holder.
    assert f"waiting for a plumber run (pid {holder.pid}, since " in err
    assert "up to 0.3 s (flow.lock_timeout_seconds)" in err
    assert f"busy: a plumber run (pid {holder.pid}" in err and "holds" in err


def test_waits_for_a_dvc_command_then_names_it(tmp_path: Path) -> None:
    lock = tmp_path / ".dvc" / "tmp" / "lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(  # DVC's own lock library, held by another process
        [sys.executable, "-c", "import sys, time, zc.lockfile; "
         f"l = zc.lockfile.LockFile({str(lock)!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=f"a DVC command \\(pid {holder.pid}: `dvc repro`"):
            wait_for_dvc(tmp_path, timeout=0.5)
    finally:
        kill(holder)
    wait_for_dvc(tmp_path, timeout=5)  # free once its holder is gone
