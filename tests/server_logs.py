"""The server-log canary: after a test session, every Prefect and MLflow server log the
tests produced is searched for ERROR lines and tracebacks of the servers' own services.

A pin that breaks a server's own background work (Prefect's scheduler on SQLAlchemy 2.1:
an error on every pass, and no scheduled run ever) fails no request a test makes; only the
server's log shows it. conftest.py runs `problems` at the end of the session and fails the
suite naming each line. A test that breaks a server on purpose (kills its database, say)
marks that server's log with `expect_errors`, giving the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

# The logs our servers write: the local Prefect server, the stack's services, and the
# MLflow UI the browser test starts.
PREFECT_LOGS = ("**/prefect-server/server.log", "**/stack/prefect.log")
MLFLOW_LOGS = ("**/stack/mlflow.log", "**/mlflow-ui.log")
# A record's first line: "12:00:00.000 | ERROR   | prefect.server.services.scheduler - ...".
PREFECT_RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \| (\w+)\s*\| ([\w.]+) - ")
# Prefect's own services (scheduler, late runs, foreman, vacuum, ...), run as docket tasks:
# their errors are the server's own, never a client's bad request or a busy database
# answered with a 503. (The scheduler on SQLAlchemy 2.1 logged as docket.dependencies:
# tests/flows/logs/scheduler-on-sqlalchemy-2.1.log.)
SERVICES = ("prefect.server.services", "docket")
# MLflow (and its uvicorn): "2026/12/07 12:00:00 ERROR mlflow...", "ERROR:    Exception ...".
MLFLOW_ERROR = re.compile(r"(^|\s)(ERROR|CRITICAL)[\s:]")
TRACEBACK = "Traceback (most recent call last)"
EXPECTED = ".errors-expected"


def expect_errors(log: Path, why: str) -> None:
    """Mark a server log whose errors a test caused on purpose: the canary passes it by."""
    log.parent.mkdir(parents=True, exist_ok=True)
    (log.parent / f"{log.name}{EXPECTED}").write_text(why + "\n")


def problems(folder: Path, limit: int = 20) -> list[str]:
    """'path:line: text' for each error of a server's own under `folder` (at most
    `limit`): in Prefect's logs an ERROR or CRITICAL record of one of its services, and a
    traceback in such a record; in MLflow's an ERROR line or a traceback. Logs marked with
    `expect_errors` are passed by."""
    found: list[str] = []
    for patterns, judge in ((PREFECT_LOGS, _prefect_errors), (MLFLOW_LOGS, _mlflow_errors)):
        for pattern in patterns:
            for log in sorted(folder.glob(pattern)):
                if (log.parent / f"{log.name}{EXPECTED}").exists():
                    continue
                lines = log.read_text(errors="replace").splitlines()
                found += [f"{log}:{n}: {line.strip()[:300]}" for n, line in judge(lines)]
    return found[:limit]


def _prefect_errors(lines: list[str]) -> list[tuple[int, str]]:
    errors, in_service_error = [], False
    for number, line in enumerate(lines, start=1):
        record = PREFECT_RECORD.match(line)
        if record:
            level, logger = record.groups()
            in_service_error = level in ("ERROR", "CRITICAL") and (
                logger.startswith(SERVICES) or level == "CRITICAL"
            )
            if in_service_error:
                errors.append((number, line))
        elif in_service_error and TRACEBACK in line:
            errors.append((number, line))
    return errors


def _mlflow_errors(lines: list[str]) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(lines, start=1)
            if MLFLOW_ERROR.search(line) or TRACEBACK in line]  # fmt: skip
