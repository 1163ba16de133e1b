"""Any released model rebuilt bit for bit from its record (issue: reproducibility and
lineage), on the demo, with real processes: release version 1, let two more days arrive
and release again, then `plumber reproduce` version 1 and the champion, here and from a
second fresh clone that shares only git, the registry and the DVC remote with the first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import LENIENT_GATE, copy_repo, env_for, small_demo_params, stop_local_server

pytestmark = pytest.mark.slow

# Not data: the MLflow run id (train.json) and images whose bytes hold matplotlib's version.
UNCOMPARED = ("models/train.json", "reports/plots")


def plumber(repo: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["plumber", *args], cwd=repo, env=env_for(**extra),
                          capture_output=True, text=True, timeout=900)  # fmt: skip


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = copy_repo(tmp_path_factory.mktemp("first"))
    ok(plumber(dest, "demo", "init", "--now", "2013-01-04"))
    small_demo_params(dest, release=LENIENT_GATE)  # params.yaml now differs from the commit
    ok(plumber(dest, "run"))  # version 1, released
    ok(plumber(dest, "demo", "advance", "--days", "2"))
    ok(plumber(dest, "run", "--force"))  # version 2 judged against it
    yield dest
    stop_local_server(dest)


def registry_state(repo: Path) -> tuple[list[tuple[str, str, str]], dict[str, str], int]:
    """Every version's (number, decision, run), the model's tags, and the runs in the
    experiment: what reproducing must leave as it was."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'var/mlflow/mlflow.db'}")
    versions = sorted((str(v.version), v.tags.get("decision", ""), v.run_id)
                      for v in client.search_model_versions("name = 'flight-delay'"))  # fmt: skip
    tags = dict(client.get_registered_model("flight-delay").tags)
    runs = client.search_runs([client.get_experiment_by_name("plumber").experiment_id])
    return versions, tags, len(runs)


def test_every_release_and_the_champion_are_rebuilt_identically(repo: Path) -> None:
    before = registry_state(repo)
    released = sorted(v[0] for v in before[0] if v[1] == "released")
    assert len(before[0]) == 2 and released[0] == "1"
    workspaces = set(Path(tempfile.gettempdir()).glob("plumber-reproduce-*"))
    files = {p: p.read_bytes() for p in (repo / "params.yaml", repo / "dvc.lock")}
    done = plumber(repo, "reproduce", "--all-released", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = json.loads(done.stdout)
    assert [r["version"] for r in reports] == released  # version 1, and the champion
    champion = json.loads(ok(plumber(repo, "lineage", "champion", "--json")))["model"]
    assert champion["version"] in released and champion["aliases"] == ["champion"]
    for report in reports:
        assert report["identical"] is True
        assert [c["what"] for c in report["compared"]] == [
            "model weights", "reports/metrics.json", "reports/test_predictions.parquet"
        ]  # fmt: skip
        assert all(c["recorded"] == c["rebuilt"] and len(c["rebuilt"]) == 64
                   for c in report["compared"])  # fmt: skip
        assert report["fetched_bytes"] > 10_000  # the inputs came from the DVC remote
    assert registry_state(repo) == before  # nothing written to the registry or experiment
    assert all(p.read_bytes() == content for p, content in files.items())  # checkout untouched
    assert set(Path(tempfile.gettempdir()).glob("plumber-reproduce-*")) == workspaces  # removed


def test_lineage_names_the_whole_chain(repo: Path) -> None:
    chain = json.loads(ok(plumber(repo, "lineage", "1", "--json")))
    assert chain["model"]["decision"] == "released" and chain["model"]["history"]
    assert chain["mlflow_run"]["status"] == "FINISHED"
    flow = chain["prefect_flow_run"]  # `plumber run` trained and recorded it
    assert len(flow["recorded_by"]) == 36 and flow["trained_by"] == flow["recorded_by"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert chain["git"]["commit"] == head
    assert chain["git"]["dirty"] is True and chain["git"]["diff_bytes"] > 0  # params.yaml
    assert chain["params"]["train"]["epochs"] == 2
    assert list(chain["stages"]) == ["collect", "validate", "featurize", "train", "evaluate"]
    assert chain["sources"]["flights"]["days"] == ["2013-01-01", "2013-01-03"]
    assert chain["sources"]["flights"]["rows"] == 842 + 943 + 914
    assert chain["remote"]["complete"] is True and chain["remote"]["objects"] > 20
    # The data version is a commit on its own branch; the checkout's branch did not move.
    branch = subprocess.run(["git", "log", "--format=%H", "plumber/data"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert chain["git"]["data_version"] in branch and len(branch) == 2 + 1  # two + the code
    text = ok(plumber(repo, "lineage", "champion"))
    assert "-> DVC remote" in text and "objects present" in text


def test_a_fresh_clone_with_empty_var_and_cache_rebuilds_the_champion(
    repo: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "second"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    shutil.copy(repo / "params.yaml", clone / "params.yaml")  # the team's settings
    assert not (clone / "var").exists() and not (clone / ".dvc/cache").exists()
    shared = f"sqlite:///{repo / 'var/mlflow/mlflow.db'}"  # the first one's registry
    done = plumber(clone, "reproduce", "champion", MLFLOW_TRACKING_URI=shared)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert ": identical (" in done.stdout and "MB fetched" in done.stdout
    assert not (clone / ".dvc/cache").exists()  # the clone's own cache was never used


def test_a_record_whose_data_left_the_remote_is_named(repo: Path, tmp_path: Path) -> None:
    """Remote objects gone: lineage says which, and the record is not followed blindly."""
    remote = repo / "var/dvc-remote"
    moved = tmp_path / "remote"
    shutil.copytree(remote, moved)
    try:
        validated = json.loads(ok(plumber(repo, "lineage", "1", "--json")))["stages"]
        md5 = validated["featurize"]["inputs"][0]["md5"]
        (remote / "files/md5" / md5[:2] / md5[2:]).unlink()
        chain = json.loads(ok(plumber(repo, "lineage", "1", "--json")))
        assert chain["remote"]["complete"] is False
        assert chain["remote"]["missing"] == [f"data/validated (not in {remote})"]
        done = plumber(repo, "reproduce", "1")
        assert done.returncode == 2
        assert f"data is gone: data/validated (not in {remote})" in done.stderr
    finally:
        shutil.rmtree(remote)
        shutil.copytree(moved, remote)


def test_a_run_without_a_record_is_incomplete_exit_2(repo: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'var/mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name("plumber").experiment_id
    bare = client.create_run(experiment).info.run_id
    client.set_terminated(bare)
    done = plumber(repo, "reproduce", bare)
    assert done.returncode == 2
    assert f"MLflow run {bare} lacks lineage/record.json" in done.stderr


def test_offline_from_the_local_cache_and_logged_to_a_scratch_experiment(repo: Path) -> None:
    import mlflow

    before = registry_state(repo)
    done = plumber(repo, "reproduce", "1", "--offline", "--log", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads(done.stdout)[0]["identical"] is True
    assert registry_state(repo) == before  # the main experiment and the registry unchanged
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'var/mlflow/mlflow.db'}")
    scratch = client.get_experiment_by_name("plumber-reproduce")
    [run] = client.search_runs([scratch.experiment_id])
    assert run.info.status == "FINISHED" and "test/model/recall_at_precision" in run.data.metrics


def test_a_reproduction_killed_midway_leaves_nothing_the_next_one_keeps(repo: Path) -> None:
    """kill -9 of `plumber reproduce` while it trains: its stage stops with it, and the
    next reproduction removes the workspace it left, then runs as usual."""
    from tests.factories import kill, leftovers, wait_until

    before = set(Path(tempfile.gettempdir()).glob("plumber-reproduce-*"))
    proc = subprocess.Popen(["plumber", "reproduce", "1"], cwd=repo, env=env_for(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def training() -> Path | None:
        new = set(Path(tempfile.gettempdir()).glob("plumber-reproduce-*")) - before
        return next((w for w in new if (w / "data/features/windows.json").exists()), None)

    work = wait_until(training, timeout=300)
    assert work is not None, "the reproduction never reached training"
    kill(proc)  # SIGKILL: no handler runs, nothing cleans up after it
    assert wait_until(lambda: not leftovers(work), timeout=60), leftovers(work)
    assert work.exists()  # left behind, as only a kill can
    done = plumber(repo, "reproduce", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"removed {work}, left by a reproduction that was stopped" in done.stderr
    assert not work.exists() and ": identical (" in done.stdout


def test_a_record_is_refused_when_the_checkout_no_longer_built_the_candidate(
    repo: Path,
) -> None:
    import yaml

    from tasks.core.errors import StepError
    from tasks.core.paths import Paths
    from tasks.lineage import record

    paths = Paths.at(repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    record.check_candidate(paths, lock)  # as the flow left it: nothing to say
    params = (repo / "params.yaml").read_text()
    changed = yaml.safe_load(params)
    changed["train"]["lr"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        with pytest.raises(StepError, match=r"other code or params than the working copy holds "
                           r"now \(train: params.yaml \(train\) changed\)"):  # fmt: skip
            record.check_candidate(paths, lock)
    finally:
        (repo / "params.yaml").write_text(params)
    model = repo / "models/model.pt"
    kept = model.read_bytes()
    model.chmod(0o644)
    model.write_bytes(kept + b"\0")
    try:
        with pytest.raises(StepError, match="models/model.pt is not what dvc.lock records"):
            record.check_candidate(paths, lock)
    finally:
        model.write_bytes(kept)


def test_plain_dvc_repro_builds_byte_identical_outputs(repo: Path) -> None:
    """The stages rerun by hand with DVC give the very bytes `plumber run` recorded (last:
    it makes a new training run in the repository)."""
    import yaml

    def outs() -> dict[str, str]:
        stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        return {o["path"]: o["md5"] for name in ("featurize", "train", "evaluate")
                for o in stages[name]["outs"] if o["path"] not in UNCOMPARED}  # fmt: skip

    recorded = outs()
    done = subprocess.run(["dvc", "repro", "--force", "--downstream", "featurize"], cwd=repo,
                          env=env_for(), capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Running stage 'train'" in done.stdout
    assert outs() == recorded
