"""The release history under two writers at once, as two machines sharing a tracking
server would append to it: no entry lost, none written twice."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.core.paths import Paths
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


def client_for(paths: Paths):  # type: ignore[no-untyped-def]
    import mlflow

    from tasks.release import registry

    uri = f"sqlite:///{paths.mlflow_db}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry.ensure_model(client, "m", paths)
    return uri, client


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_two_writers_keep_every_entry(paths: Paths) -> None:
    from tasks.release import registry

    uri, client = client_for(paths)
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


def test_the_history_is_a_readable_artifact_not_model_tags(paths: Paths) -> None:
    from tasks.release import registry

    _, client = client_for(paths)
    for i, (before, after) in enumerate([(None, "1"), ("1", "2")]):
        registry.record(client, "m", {"action": "release", "from": before, "to": after,
                                      "forced": False, "reason": f"gate passed {i}"})  # fmt: skip
    tags = client.get_registered_model("m").tags
    assert list(tags) == [registry.HISTORY_EXPERIMENT_TAG]  # one short tag, no JSON
    experiment = client.get_experiment(tags[registry.HISTORY_EXPERIMENT_TAG])
    assert experiment.name == "plumber-releases"
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "m release history"
    table = Path(client.download_artifacts(run.info.run_id, registry.TABLE, str(paths.root)))
    assert table.read_text() == registry.format_history("m", registry.history(client, "m"))
    assert "gate passed 1" in table.read_text().splitlines()[-1]
    assert len(client.list_artifacts(run.info.run_id, registry.ENTRIES)) == 2


def test_a_history_kept_as_model_tags_moves_into_the_artifacts(paths: Paths) -> None:
    import json

    import mlflow

    from tasks.release import registry

    uri = f"sqlite:///{paths.mlflow_db}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    old = [{"seq": 1, "at": "2026-11-01T06:00:00+00:00", "action": "release", "from": None,
            "to": "1", "forced": False, "reason": "first release"},
           {"seq": 2, "at": "2026-11-02T06:00:00+00:00", "action": "release", "from": "1",
            "to": "2", "forced": False, "reason": "better"}]  # fmt: skip
    client.set_registered_model_tag("m", "history.000001", json.dumps(old[0]))
    client.set_registered_model_tag("m", "history.000002.3f9c2a1b", json.dumps(old[1]))
    registry.ensure_model(client, "m", paths)  # what every release and `plumber releases` do
    assert not [k for k in client.get_registered_model("m").tags if k.startswith("history.")]
    assert registry.history(client, "m") == old
    registry.record(client, "m", {"action": "rollback", "from": "2", "to": "1"})
    assert [e["seq"] for e in registry.history(client, "m")] == [1, 2, 3]


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
