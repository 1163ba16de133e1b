"""Pointing at a stack is one profile file: read, checked, never silently replaced by the
local stores, and shown by `plumber status`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError
from tasks.core.paths import Paths
from tasks.core.profile import (
    STACK_ENV,
    configure_dvc_remote,
    current,
    load_profile,
    read_profile,
)
from tasks.core.tracking import tracking_uri
from tasks.ops.status import format_stack

PROFILE = """\
# a team's stack
MLFLOW_TRACKING_URI=http://mlflow.internal:5000
export PREFECT_API_URL="http://prefect.internal:4200/api"
PLUMBER_DVC_REMOTE=s3://team/plumber/dvc
PLUMBER_LOCKS_URL=postgresql://plumber:hunter2@db.internal:5432/plumber

AWS_ENDPOINT_URL=http://minio.internal:9000
"""


def write(tmp_path: Path, text: str = PROFILE) -> Path:
    path = tmp_path / "team.env"
    path.write_text(text)
    return path


def test_a_profile_fills_the_environment_and_set_variables_win(tmp_path: Path) -> None:
    env = {STACK_ENV: str(write(tmp_path)), "MLFLOW_TRACKING_URI": "http://other:5000"}
    assert load_profile(env) == (tmp_path / "team.env").resolve()
    assert env["MLFLOW_TRACKING_URI"] == "http://other:5000"  # the environment wins
    assert env["PREFECT_API_URL"] == "http://prefect.internal:4200/api"  # quotes, export
    assert env["PLUMBER_DVC_REMOTE"] == "s3://team/plumber/dvc"
    assert env["AWS_ENDPOINT_URL"] == "http://minio.internal:9000"


def test_without_a_profile_nothing_changes() -> None:
    env = {"HOME": "/root"}
    assert load_profile(env) is None
    assert env == {"HOME": "/root"}


def test_a_profile_missing_a_shared_service_is_refused_naming_it(tmp_path: Path) -> None:
    text = PROFILE.replace(
        "PLUMBER_LOCKS_URL=postgresql://plumber:hunter2@db.internal:5432/plumber\n", ""
    )
    env = {STACK_ENV: str(write(tmp_path, text))}
    with pytest.raises(ConfigError, match=r"does not name PLUMBER_LOCKS_URL: .*nothing falls back"):
        load_profile(env)


def test_a_missing_or_malformed_profile_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"PLUMBER_STACK names .*nowhere.env, which cannot be read"
    ):
        load_profile({STACK_ENV: str(tmp_path / "nowhere.env")})
    bad = write(tmp_path, "MLFLOW_TRACKING_URI http://x\n")
    with pytest.raises(ConfigError, match=r"team.env:1: expected KEY=VALUE"):
        read_profile(bad)


def test_with_a_profile_mlflow_never_falls_back_to_the_local_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STACK_ENV, str(write(tmp_path)))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(
        ConfigError, match=r"MLFLOW_TRACKING_URI is not: MLflow runs .* local store"
    ):
        tracking_uri(Paths.at(tmp_path))
    monkeypatch.delenv(STACK_ENV)
    assert tracking_uri(Paths.at(tmp_path)).startswith("sqlite:///")  # the embedded default


def test_status_names_the_stack_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PLUMBER_DVC_REMOTE",
                "PLUMBER_LOCKS_URL", "AWS_ENDPOINT_URL"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    embedded = current("sqlite:///var/mlflow/mlflow.db", "var/dvc-remote")
    assert not embedded.shared
    assert "file locks under var/" in embedded.locks
    env = {STACK_ENV: str(write(tmp_path))}
    load_profile(env)
    for key, value in env.items():  # through monkeypatch: undone after the test
        monkeypatch.setenv(key, value)
    stack = current("unused", "unused")
    lines = "\n".join(format_stack(stack.__dict__))
    assert f"stack: profile {(tmp_path / 'team.env').resolve()}" in lines
    assert "data remote: s3://team/plumber/dvc at http://minio.internal:9000" in lines
    assert "orchestration: http://prefect.internal:4200/api" in lines
    assert "hunter2" not in lines and "db.internal:5432/plumber" in lines


def test_the_profile_remote_goes_to_dvc_local_config_never_to_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    shared = (tmp_path / ".dvc" / "config").read_text()
    monkeypatch.setenv("PLUMBER_DVC_REMOTE", "s3://team/plumber/dvc")
    configure_dvc_remote(tmp_path)
    configure_dvc_remote(tmp_path)  # idempotent
    local = (tmp_path / ".dvc" / "config.local").read_text()
    assert "remote = stack" in local and "url = s3://team/plumber/dvc" in local
    assert (tmp_path / ".dvc" / "config").read_text() == shared
    ignored = subprocess.run(["git", "check-ignore", ".dvc/config.local"], cwd=tmp_path)
    assert ignored.returncode == 0
    # `make stack-down` gives the embedded default back: no remote nobody serves.
    from tests.factories import stack

    down = stack(tmp_path, "down")
    assert down.returncode == 0
    assert "stack" not in (tmp_path / ".dvc" / "config.local").read_text()
    assert down.stderr.splitlines() == [f"the DVC remote of {tmp_path} is its embedded default "
                                        "again (.dvc/config.local)"]  # fmt: skip
    listed = subprocess.run([sys.executable, "-m", "dvc", "remote", "list"], cwd=tmp_path,
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert listed.stdout == ""
