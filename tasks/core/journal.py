"""Intent records: what an operation that writes to MLflow is doing, kept until it ends.

    var/journal/<operation>-<pid>.json   {"operation", "pid", "pid_started", "started", ...}

Training and releases write one when they start and remove it when they end, failed or
not. A SIGKILL runs no cleanup code, so a record whose process is gone is a killed
operation: its MLflow run may still say RUNNING, its registry version may still be
`pending`. The next run reads these records to know, without asking MLflow, whether there
is anything to repair (tasks/release/recovery.py), which keeps a run with nothing new fast.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core import clock, processes
from tasks.core.io import write_json
from tasks.core.paths import Paths


def folder(paths: Paths) -> Path:
    return paths.journal


@dataclass
class Intent:
    path: Path
    record: dict[str, Any]

    def note(self, **more: Any) -> None:
        """Add what the operation learnt (its MLflow run id, its registry version)."""
        self.record.update(more)
        write_json(self.path, self.record)


@contextmanager
def intent(paths: Paths, operation: str, **info: Any) -> Iterator[Intent]:
    """Record the operation for its duration; the record stays only if it is killed."""
    pid = os.getpid()
    record = {
        "operation": operation,
        "pid": pid,
        "pid_started": processes.started(pid),
        "host": socket.gethostname(),
        "started": clock.stamp(),
        **info,
    }
    entry = Intent(folder(paths) / f"{operation}-{pid}.json", record)
    write_json(entry.path, record)
    try:
        yield entry
    finally:
        entry.path.unlink(missing_ok=True)


def unfinished(paths: Paths) -> list[tuple[Path, dict[str, Any]]]:
    """The records whose process is gone: operations that were killed."""
    found = []
    for path in sorted(folder(paths).glob("*.json")) if folder(paths).is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            found.append((path, {"operation": path.stem.split("-")[0]}))  # torn write
            continue
        if not processes.alive(int(record.get("pid", -1)), record.get("pid_started")):
            found.append((path, record))
    return found
