"""The server-log canary: after a test session, every Prefect and MLflow server log the
tests produced is searched for ERROR lines and tracebacks of the servers themselves.

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
PATTERNS = ("**/prefect-server/server.log", "**/stack/prefect.log", "**/stack/mlflow.log",
            "**/mlflow-ui.log")  # fmt: skip
# Prefect: "12:00:00.000 | ERROR   | prefect.server..."; MLflow and uvicorn: "... ERROR ...",
# "ERROR:    Exception in ASGI application"; Python: a traceback's first line.
ERROR = re.compile(r"(^|[\s|])(ERROR|CRITICAL)([\s:|]|$)|Traceback \(most recent call last\)")
EXPECTED = ".errors-expected"


def expect_errors(log: Path, why: str) -> None:
    """Mark a server log whose errors a test caused on purpose: the canary passes it by."""
    log.parent.mkdir(parents=True, exist_ok=True)
    (log.parent / f"{log.name}{EXPECTED}").write_text(why + "\n")


def problems(folder: Path, limit: int = 20) -> list[str]:
    """'path:line: text' for each ERROR line or traceback in the server logs under
    `folder` (at most `limit`), but in logs marked with `expect_errors`."""
    found: list[str] = []
    for pattern in PATTERNS:
        for log in sorted(folder.glob(pattern)):
            if (log.parent / f"{log.name}{EXPECTED}").exists():
                continue
            lines = log.read_text(errors="replace").splitlines()
            for number, line in enumerate(lines, start=1):
                if ERROR.search(line):
                    found.append(f"{log}:{number}: {line.strip()[:300]}")
                    if len(found) >= limit:
                        return found
    return found
