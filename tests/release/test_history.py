"""The release history under two writers at once, as two machines sharing a tracking
server would append to it: no entry lost, none written twice."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.factories import ROOT

APPEND = """
import sys, time
import mlflow
from tasks.release import registry
uri, writer, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
while time.time() < start:  # both begin together
    time.sleep(0.001)
for i in range(12):
    registry.record(client, "m", {"action": "test", "writer": writer, "i": i})
"""


def test_two_writers_keep_every_entry(tmp_path: Path) -> None:
    import mlflow

    from tasks.release import registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    start = str(time.time() + 6)  # after both processes have imported MLflow
    writers = [subprocess.Popen([sys.executable, "-c", APPEND, uri, name, start], cwd=ROOT,
                                stderr=subprocess.PIPE, text=True) for name in ("a", "b")]  # fmt: skip
    errors = [proc.communicate(timeout=300)[1] for proc in writers]
    assert [proc.returncode for proc in writers] == [0, 0], [e[-2000:] for e in errors]
    entries = registry.history(client, "m")
    assert len(entries) == 24  # before, one writer's entry overwrote the other's (or crashed)
    assert len({(e["writer"], e["i"]) for e in entries}) == 24
    for name in ("a", "b"):  # each writer's entries in the order it wrote them
        assert [e["i"] for e in entries if e["writer"] == name] == list(range(12))


def test_the_history_table_has_each_heading_over_its_column() -> None:
    from tasks.release.registry import format_history

    entries = [{"seq": 1, "at": "2026-12-07T19:37:51+00:00", "action": "release", "from": None,
                "to": "1", "forced": False, "reason": "first release"},
               {"seq": 12, "at": "2026-12-08T06:00:02+00:00", "action": "rollback", "from": "3",
                "to": "1", "forced": True, "reason": "too noisy"}]  # fmt: skip
    header, *rows = format_history("m", entries).splitlines()
    for heading, value in [("when (UTC)", "2026-12-07"), ("action", "release"),
                           ("forced", "no"), ("reason", "first release")]:  # fmt: skip
        assert header.index(heading) == rows[0].index(value), (heading, header, rows[0])
    assert header.index("action") == rows[1].index("rollback")
