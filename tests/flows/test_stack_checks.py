"""Bad input to the stack and to a worker's run: one line naming the problem, nothing started."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack import provision as stack
from flows.pipeline import check_root
from tasks.core.errors import ConfigError
from tasks.core.paths import Paths
from tests.factories import ROOT
from tests.factories import stack as run_stack


def test_a_stack_name_s3_and_postgresql_cannot_take_is_refused(tmp_path: Path) -> None:
    done = run_stack(tmp_path, "up", "--name", "Team-A")
    assert done.returncode == 1
    assert done.stderr.startswith("error: stack name 'Team-A': use lower-case letters")
    assert not (tmp_path / "var" / "stack" / "state.json").exists()


def test_an_unreachable_postgresql_is_named_without_its_password() -> None:
    admin = "postgresql://plumber:s3cret@127.0.0.1:1/postgres"
    with pytest.raises(stack.StackError) as caught:
        stack.create_databases(admin, ["plumbertest_never"])
    message = str(caught.value)
    assert message.startswith("PostgreSQL at postgresql://plumber:***@127.0.0.1:1/postgres")
    assert "PLUMBER_STACK_PG" in message and "s3cret" not in message


def test_a_flow_run_outside_a_checkout_is_one_line_naming_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("")
    with pytest.raises(ConfigError, match=r"is not a Plumber checkout \(no dvc.yaml\)"):
        check_root(Paths.at(tmp_path))
    check_root(Paths.at(ROOT))  # the project itself is one


def test_a_worker_without_the_git_url_stops_at_the_first_pull_step() -> None:
    first = yaml.safe_load((ROOT / "prefect.yaml").read_text())["pull"][0]
    step = first["prefect.deployments.steps.run_shell_script"]
    assert step["shell"] is True
    env = {k: v for k, v in os.environ.items() if k != "PLUMBER_GIT_URL"}
    done = subprocess.run(["sh", "-c", step["script"]], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("PLUMBER_GIT_URL is not set: a worker clones the project")
    given = subprocess.run(["sh", "-c", step["script"]], env={**env, "PLUMBER_GIT_URL": "x"},
                           capture_output=True, text=True)  # fmt: skip
    assert given.returncode == 0
