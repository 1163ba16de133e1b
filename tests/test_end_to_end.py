"""The whole foundation on a few demo days, in a temporary copy of this repository:
demo upstream (all three source kinds), `plumber run` through Prefect and DVC, `dvc push`,
an incremental day, a no-op run, plain `dvc repro`, and a failing source."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tasks.demo.api import make_server
from tests.factories import copy_repo, small_demo_params, stop_local_server

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def sh(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PREFECT_HOME", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = copy_repo(tmp_path_factory.mktemp("plumber"))
    sh(dest, "plumber", "demo", "init", "--now", "2013-01-04")
    api = make_server(dest / "var/upstream/drop/weather", port=0)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    small_demo_params(dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    http = params["collect"]["sources"]["weather_api"]
    http.update(enabled=True, url=f"http://127.0.0.1:{api.server_address[1]}/weather")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    yield dest
    api.shutdown()
    api.server_close()
    stop_local_server(dest)


def status(repo: Path) -> dict:
    return json.loads(sh(repo, "plumber", "status", "--json").stdout)


def remote_objects(repo: Path) -> set[str]:
    store = repo / "var/dvc-remote/files/md5"
    return {p.parent.name + p.name for p in store.rglob("*") if p.is_file()}


def md5_of_files(folder: Path) -> dict[str, list[str]]:
    """DVC object id -> the files with that content (identical files share one object)."""
    files: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            files.setdefault(hashlib.md5(path.read_bytes()).hexdigest(), []).append(
                str(path.relative_to(folder))
            )
    return files


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A local webhook: keeps every JSON body posted to it."""

    received: typing.ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class TestOneRepositoryOverDays:
    """One scenario, in order: each test acts on the repository the ones before it left
    (first run, no-op run, forced retrain, concurrent runs, a new day, plain dvc repro, the
    MLflow run, a failing source). pytest runs a class's tests in the order written; each
    needs the ones before it, so run the class, not one of its tests alone."""

    def test_first_run_collects_every_source_kind(self, repo: Path) -> None:
        out = sh(repo, "plumber", "run").stdout
        for stage in ("collect", "validate", "featurize", "train", "evaluate"):
            assert f"{stage:<12}ran" in out, out
        assert "hist_gradient_boosting" in out and "recall@P" in out  # the evaluation summary
        assert "candidate version 1" in out and "decision: " in out  # then the release
        st = status(repo)
        assert st["watermarks"]["flights"] == "2013-01-04T05:00:00+00:00"
        assert (
            st["watermarks"]["weather"]
            == st["watermarks"]["weather_api"]
            == "2013-01-04T05:00:00+00:00"
        )
        assert st["raw_days"] == 3
        last = st["last_run"]
        assert last["state"] == "COMPLETED" and last["decision"] in ("released", "rejected")
        assert len(last["id"]) == 36 and last["started"] <= last["finished"]
        assert st["sources"]["flights"]["rows"] == 842 + 943 + 914
        assert st["sources"]["weather_api"]["rows"] == st["sources"]["weather"]["rows"] > 200
        assert st["quarantined_rows"] == 0
        assert (repo / "dvc.lock").exists()
        sh(repo, "dvc", "push")
        assert len(remote_objects(repo)) > 10

    def test_rerun_without_new_data_skips_everything_after_collect(self, repo: Path) -> None:
        out = sh(repo, "plumber", "run").stdout
        assert "collect     ran" in out
        assert "validate    unchanged " in out  # DVC: nothing changed
        for stage in ("featurize", "train", "evaluate"):  # the retrain policy
            assert f"{stage:<12}skipped " in out, out
        assert "no retrain needed: 0 new rows since 2013-01-03" in out
        assert "decision:" not in out  # no release without a new candidate
        assert status(repo)["last_run"]["retrain"] is False

    def test_force_retrains_and_judges_the_new_candidate(self, repo: Path) -> None:
        out = sh(repo, "plumber", "run", "--force").stdout
        assert "retrain: forced: plumber run --force" in out
        # Nothing changed upstream, yet --force retrains: DVC runs the stages again...
        for stage in ("featurize", "train", "evaluate"):
            assert f"{stage:<12}ran" in out, out
        # ... and the new training is a new candidate, judged as a version of its own.
        assert "candidate version 2" in out
        again = sh(repo, "plumber", "run").stdout  # nothing new: no retrain, nothing to judge
        assert "no retrain needed" in again and "decision:" not in again

    def test_two_runs_and_a_dvc_repro_at_once_take_turns(self, repo: Path) -> None:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        env.pop("PREFECT_HOME", None)
        first = subprocess.Popen(["plumber", "run"], cwd=repo, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        holder = repo / "var/run.holder.json"
        deadline = time.monotonic() + 60
        while not holder.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        # --wait-for-lock: DVC's own way to wait for a holder (the plumber run's stages)
        repro = subprocess.Popen(["dvc", "--wait-for-lock", "repro"], cwd=repo, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        second = sh(repo, "plumber", "run", ok=False)  # waits for the first run, then for DVC
        outputs = [first.communicate(timeout=600), repro.communicate(timeout=600)]
        assert first.returncode == 0, outputs[0][1][-3000:]
        assert repro.returncode == 0, outputs[1][1][-3000:]
        assert second.returncode == 0, second.stderr[-3000:]
        everything = second.stdout + second.stderr + "".join(o + e for o, e in outputs)
        assert "Unable to acquire lock" not in everything
        assert "evaluate    skipped" in second.stdout

    def test_a_new_day_pushes_only_that_days_files(self, repo: Path) -> None:
        before = remote_objects(repo)
        sh(repo, "plumber", "demo", "advance", "--days", "1")
        sh(repo, "plumber", "run")
        assert status(repo)["raw_days"] == 4
        sh(repo, "dvc", "push")
        new = remote_objects(repo) - before
        files = md5_of_files(repo / "data")
        for folder in ("models", "reports"):
            for h, names in md5_of_files(repo / folder).items():
                files.setdefault(h, []).extend(f"{folder}/{n}" for n in names)
        pushed = sorted(name for h in new for name in files.get(h, []))
        collected = [p for p in pushed if p.startswith(("raw/", "validated/"))]
        day_sources = ("flights", "weather", "weather_api")
        assert collected == sorted([
            "raw/manifest.json",
            *(f"raw/{s}/2013-01-04.parquet" for s in day_sources),
            *(f"validated/{s}/2013-01-04.parquet" for s in day_sources),
            *(f"validated/{s}/_keys/2013-01-04.npy" for s in day_sources),
            *(f"validated/{s}/_ledger.json" for s in day_sources),
        ])  # fmt: skip
        # Features: the new day's two files; the windows and encoders move with the split.
        assert [p for p in pushed if p.startswith("features/")] == [
            "features/days/2013-01-04.json", "features/days/2013-01-04.parquet",
            "features/encoders.json", "features/windows.json",
        ]  # fmt: skip
        # The new day moves the split: new features, a retrained model and its predictions.
        assert {p.split("/")[0] for p in pushed} == {
            "raw",
            "validated",
            "features",
            "models",
            "reports",
        }
        assert all(h.endswith(".dir") for h in new if h not in files)  # the folder listings

    def test_plain_dvc_repro_runs_the_same_stages(self, repo: Path) -> None:
        out = sh(repo, "dvc", "repro").stdout
        assert "Running stage 'collect'" in out
        for stage in ("validate", "featurize", "train", "evaluate"):
            assert f"Stage '{stage}' didn't change, skipping" in out

    def test_metrics_and_the_mlflow_run(self, repo: Path) -> None:
        metrics = json.loads((repo / "reports/metrics.json").read_text())
        assert set(metrics) >= {"model", "baselines", "slices", "threshold", "test_rows"}
        assert set(metrics["baselines"]) == {
            "majority",
            "logistic_regression",
            "hist_gradient_boosting",
        }
        assert set(metrics["slices"]["origin"]) == {"EWR", "JFK", "LGA"}
        shown = sh(repo, "dvc", "metrics", "show", "--json").stdout
        assert "recall_at_precision" in shown
        run_id = json.loads((repo / "models/train.json").read_text())["run_id"]
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'var/mlflow/mlflow.db'}")
        tags = client.get_run(run_id).data.tags
        assert len(tags["prefect.flow_run_id"]) == 36  # the flow's run id reached the stage
        assert re.fullmatch(
            r"A candidate model, trained on 2013-01-01 to 2013-01-0\d \([\d,]+ rows\), "
            r"early-stopped on .+ and tested on .+; the evaluate stage .+ champion\.",
            tags["mlflow.note.content"],
        ), tags["mlflow.note.content"]
        experiment = client.get_experiment_by_name("plumber")
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not GenAI
        assert experiment.tags["mlflow.note.content"].startswith("Plumber's training runs")
        assert "test/model/recall_at_precision" in client.get_run(run_id).data.metrics

    def test_a_failing_source_fails_the_run_and_keeps_the_data(
        self, repo: Path, monkeypatch
    ) -> None:
        receiver = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook?token=s3cret"
        monkeypatch.setenv("PLUMBER_NOTIFY_URL", url)
        before = status(repo)
        lock = (repo / "dvc.lock").read_text()
        bad = repo / "var/upstream/drop/weather/weather_2013-01-05.csv"
        bad.write_bytes(b"")
        try:
            done = sh(repo, "plumber", "run", ok=False)
        finally:
            bad.unlink()
        assert done.returncode == 1
        assert "weather: weather_2013-01-05.csv is empty" in done.stderr + done.stdout
        assert "collect" in done.stderr
        receiver.shutdown()
        [message] = _Receiver.received  # the on_failure hook's webhook message
        assert message["stage"] == "collect"
        assert message["error"].startswith("weather: weather_2013-01-05.csv is empty")  # its own
        assert (
            message["flow_run"]["id"] in message["text"]
            and "failed in stage collect" in message["text"]
        )
        assert "s3cret" not in done.stdout + done.stderr  # the URL's token never reaches the logs
        after = status(repo)
        assert after["watermarks"] == before["watermarks"]
        assert after["last_run"]["state"] == "FAILED" and after["last_run"]["decision"] is None
        assert (repo / "dvc.lock").read_text() == lock
