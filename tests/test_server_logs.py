"""The server-log canary (tests/server_logs.py) on logs the servers really wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.server_logs import expect_errors, problems

SAMPLES = Path(__file__).parent / "flows" / "logs"


def test_the_scheduler_failing_on_sqlalchemy_2_1_is_caught_naming_the_line(tmp_path) -> None:
    """Prefect 3.8.8's local server with SQLAlchemy 2.1.9 and a one-minute schedule: its
    scheduler's error, as it logged it, fails the canary at that line."""
    log = tmp_path / "repo/var/prefect-server/server.log"
    log.parent.mkdir(parents=True)
    shutil.copy(SAMPLES / "scheduler-on-sqlalchemy-2.1.log", log)
    found = problems(tmp_path)
    assert found[0].startswith(f"{log}:17: ") and "ERROR   | docket.dependencies" in found[0]
    assert found[0].endswith("schedule_recent_deployments(){schedule_recent_deployments}")
    assert found[1] == f"{log}:18: Traceback (most recent call last):"
    expect_errors(log, "this test wrote it")
    assert problems(tmp_path) == []


def test_a_clients_error_or_a_busy_database_is_not_the_servers_own(tmp_path) -> None:
    log = tmp_path / "stack/prefect.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        "12:00:00.000 | INFO    | prefect.server.services.scheduler - Scheduled 3 runs.\n"
        "12:00:01.000 | ERROR   | prefect.server.api.server - Encountered exception in "
        "request:\nTraceback (most recent call last):\n  sqlite3.OperationalError: "
        "database is locked\n"
        "12:00:02.000 | CRITICAL | prefect.server - the database is gone\n"
    )
    assert problems(tmp_path) == [f"{log}:5: 12:00:02.000 | CRITICAL | prefect.server - the "
                                  "database is gone"]  # fmt: skip
    expect_errors(log, "a sample this test wrote")  # not for the session's canary


def test_an_error_in_an_mlflow_servers_log_is_caught(tmp_path) -> None:
    log = tmp_path / "repo/var/mlflow-ui.log"
    log.parent.mkdir(parents=True)
    log.write_text("INFO:     127.0.0.1 - GET /health 200\n"
                   "2026/12/07 12:00:00 ERROR mlflow.server: Exception on /ajax-api\n")  # fmt: skip
    assert problems(tmp_path) == [
        f"{log}:2: 2026/12/07 12:00:00 ERROR mlflow.server: Exception on /ajax-api"
    ]
    expect_errors(log, "a sample this test wrote")  # not for the session's canary
