"""Data versions in the shared record, with two checkouts of a small DVC project sharing one
MLflow store and one DVC remote (two machines): one line of versions, restored whole (the
outputs DVC does not cache included), and unrecorded work on an old version never recorded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.config import load_params
from tasks.core.errors import StepError
from tasks.core.paths import Paths
from tasks.lineage import data_versions
from tests.factories import ROOT, small_disk

DVC_YAML = """\
stages:
  build:
    cmd: python -c "import shutil; shutil.copy('input.txt', 'data/out.txt'); open('models/train.json', 'w').write(open('input.txt').read())"
    deps: [input.txt]
    outs:
      - data/out.txt
      - models/train.json:
          cache: false
"""


def dvc(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True,
                   capture_output=True)  # fmt: skip


def checkout(root: Path, remote: Path) -> Paths:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "remote", "add", "-d", "shared", str(remote))
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "data").mkdir()
    (root / "models").mkdir()
    return Paths.at(root)


def build(paths: Paths, content: str) -> None:
    (paths.root / "input.txt").write_text(content)
    dvc(paths.root, "repro", "-q")


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Paths]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    remote = tmp_path / "remote"
    remote.mkdir()
    return {name: checkout(tmp_path / name, remote) for name in ("a", "b")}


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_one_line_of_versions_restored_whole_and_stale_work_never_recorded(
    shared: dict[str, Paths],
) -> None:
    a, b = shared["a"], shared["b"]
    params = load_params(a.params)
    assert data_versions.restore(a, params).startswith("no data version recorded yet")
    build(a, "day 1")
    first = data_versions.publish(a, params, flow_run_id="run-1")
    assert (first["seq"], first["new"]) == (1, True)
    again = data_versions.publish(a, params, flow_run_id="run-2")  # nothing changed
    assert (again["seq"], again["new"]) == (1, False)

    assert data_versions.restore(b, params).startswith("restored data version 1")
    assert (b.root / "data/out.txt").read_text() == "day 1"
    assert (b.root / "models/train.json").read_text() == "day 1"  # uncached: carried along
    assert data_versions.restore(b, params) == "data version 1 is here already"

    build(a, "day 2")
    assert data_versions.publish(a, params, None)["seq"] == 2
    build(b, "b's own day")  # b's work on version 1, which a has moved past
    with pytest.raises(StepError, match="data version 2 was recorded by another run since"):
        data_versions.publish(b, params, None)
    assert [v.seq for v in [data_versions.latest(a)] if v] == [2]  # b recorded nothing

    assert data_versions.restore(b, params).startswith("restored data version 2")
    assert (b.root / "data/out.txt").read_text() == "day 2"
    assert (b.root / "models/train.json").read_text() == "day 2"
    assert (b.root / "dvc.lock").read_bytes() == (a.root / "dvc.lock").read_bytes()


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_unrecorded_work_on_the_latest_version_is_continued_not_replaced(
    shared: dict[str, Paths],
) -> None:
    a = shared["a"]
    params = load_params(a.params)
    build(a, "day 1")
    data_versions.publish(a, params, None)
    build(a, "day 2, a run that failed before recording it")
    assert data_versions.restore(a, params).startswith("continuing from data version 1")
    assert (a.root / "data/out.txt").read_text() == "day 2, a run that failed before recording it"
    assert data_versions.publish(a, params, None)["seq"] == 2


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_a_version_that_fails_or_dies_while_recorded_is_ended_and_recorded_once(
    shared: dict[str, Paths],
) -> None:
    """Its artifacts meet a full disk (real: a 1 MiB file system under the store): the
    run ends FAILED, named as not recorded; one killed mid-record (left RUNNING) is ended
    KILLED by the next; then the version is recorded once."""
    from urllib.parse import urlparse

    import mlflow

    a = shared["a"]
    params = load_params(a.params)
    build(a, "day 1")
    data_versions.publish(a, params, None)
    client = mlflow.MlflowClient()
    [experiment] = [e for e in client.search_experiments() if e.name.endswith("-data")]
    artifacts = Path(urlparse(experiment.artifact_location).path)
    build(a, "day 2 " + "x" * 3_000_000)  # an uncached output larger than the disk
    with small_disk(artifacts, "1m"), pytest.raises(OSError):
        data_versions.publish(a, params, "run-2")
    runs = client.search_runs([experiment.experiment_id])
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert [r.info.run_name for r in failed] == ["data-v2 (not recorded)"]
    assert data_versions.latest(a).seq == 1  # not a version

    # A process killed while recording leaves its run RUNNING: the next ends it.
    left = client.create_run(experiment.experiment_id, run_name="data-v2",
                             tags={data_versions.SEQ_TAG: "2"})  # fmt: skip
    assert data_versions.publish(a, params, "run-3")["seq"] == 2
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    assert runs[left.info.run_id].info.status == "KILLED"
    named = sorted((r.info.run_name, r.info.status) for r in runs.values())
    assert named == [("data-v1", "FINISHED"), ("data-v2", "FINISHED"),
                     ("data-v2 (not recorded)", "FAILED"),
                     ("data-v2 (not recorded)", "KILLED")]  # fmt: skip
