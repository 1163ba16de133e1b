"""The train and evaluate stages in a temporary project: MLflow contents, outputs, a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.core.io import read_json
from tests.factories import ROOT, feature_project

# The stages train and evaluate for real: make test-fast leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture
def featured(tmp_path: Path, monkeypatch) -> Path:
    """A project root with features built, as the train stage finds it in a flow run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PLUMBER_FLOW_RUN_ID", "flow-run-123")
    return feature_project(tmp_path)


def test_train_and_evaluate_record_everything(featured: Path) -> None:
    import mlflow

    from tasks import evaluate, train
    from tasks.core.config import load_params
    from tasks.core.paths import Paths

    paths = Paths.at(featured)
    params = load_params(paths.params)
    info = train.run(params, paths)
    report = evaluate.run(params, paths)

    assert (featured / "models/model.pt").exists() and read_json(
        featured / "models/train.json"
    ) == info
    run = mlflow.MlflowClient().get_run(info["run_id"])
    assert run.data.params["train.lr"] == "0.001" and run.data.params["model.hidden"] == "[16]"
    assert run.data.params["model.members"] == "2"
    assert run.data.params["featurize.history_gap_minutes"] == "30.0"
    # Named so that MLflow groups them: per-epoch curves, then each model on the test days.
    assert {"epoch/train_loss", "epoch/valid_pr_auc", "epoch/valid_log_loss", "train/best_epoch", "train/seconds",
            "test/model/recall_at_precision", "valid/model/recall_at_precision",
            "test_baseline/hist_gradient_boosting/pr_auc"} <= set(run.data.metrics)  # fmt: skip
    assert not [name for name in run.data.metrics if "." in name or name.count("/") > 2]
    history = mlflow.MlflowClient().get_metric_history(info["run_id"], "epoch/train_loss")
    assert [m.step for m in history] == list(range(1, info["epochs_run"] + 1))
    tags = run.data.tags
    assert tags["prefect.flow_run_id"] == "flow-run-123"
    assert tags["git.commit"] and tags["git.dirty"] in ("True", "False")
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "valid", "test"} and all(
        d.dataset.digest for d in inputs.values()
    )
    assert run.info.artifact_uri.startswith((featured / "var/mlflow/artifacts").as_uri())
    assert not (featured / "mlruns").exists()

    # The shape tools rely on, every block on the same test rows.
    assert set(report) >= {"model", "baselines", "slices", "threshold", "test_rows"}
    blocks = [report["model"], *report["baselines"].values()]
    assert {b["rows"] for b in blocks} == {report["test_rows"]} == {300}
    assert len({b["positives"] for b in blocks}) == 1
    for key in (
        "recall_at_precision",
        "precision",
        "recall",
        "pr_auc",
        "roc_auc",
        "log_loss",
        "brier",
        "ece",
        "accuracy",
    ):
        assert all(key in b for b in blocks)
    assert report["baselines"]["majority"]["recall_at_precision"] == 0.0
    assert set(report["slices"]["origin"]) == {"EWR", "JFK", "LGA"}
    assert {p.name for p in (featured / "reports/plots").iterdir()} >= {
        "pr",
        "calibration",
        "confusion.csv",
        "pr_curves.png",
    }
    predictions = pd.read_parquet(featured / "reports/test_predictions.parquet")
    assert len(predictions) == 300 and predictions["proba"].between(0, 1).all()


def test_missing_inputs_name_the_stage_to_run(tmp_path: Path) -> None:
    from tasks import evaluate, train
    from tasks.core.config import load_params
    from tasks.core.errors import StepError
    from tasks.core.paths import Paths

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    paths = Paths.at(tmp_path)
    with pytest.raises(
        StepError, match=r"data/features/encoders.json is missing: run the featurize stage first"
    ):
        train.run(load_params(paths.params), paths)
    with pytest.raises(StepError, match=r"models/train.json is missing: run the train stage first"):
        evaluate.run(load_params(paths.params), paths)


def test_featurize_with_too_few_days_names_the_params(tmp_path: Path) -> None:
    import datetime as dt

    from tasks import collect, featurize, validate
    from tasks.core.config import load_params
    from tasks.core.errors import StepError
    from tasks.core.paths import Paths
    from tests.factories import MiniProject

    project = MiniProject(tmp_path)
    project.add_days(dt.date(2013, 3, 1), 3)
    paths = Paths.at(tmp_path)
    params = load_params(paths.params)
    collect.run(params.collect, paths)
    validate.run(params, paths, now=dt.datetime(2013, 3, 10, tzinfo=dt.UTC))
    with pytest.raises(
        StepError,
        match=r"featurize: 3 days of data; featurize.test_days \+ valid_days need at least 36",
    ):
        featurize.run(params.featurize, paths, params.compute)
    assert not paths.features.exists()


def train_process(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "tasks.train"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def train_to_the_end(root: Path) -> None:
    proc = train_process(root)
    _, err = proc.communicate(timeout=300)  # its pipe read to the end, and closed
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.drill  # a real kill at every step: with the fault drills (make test-drills)
def test_killed_training_leaves_the_previous_outputs_and_the_next_run_completes(
    featured: Path,
) -> None:
    train_to_the_end(featured)
    before = {p.name: p.read_bytes() for p in (featured / "models").iterdir()}

    params = yaml.safe_load((featured / "params.yaml").read_text())
    params["train"].update(epochs=200, patience=200, seed=5)  # long enough to be killed in
    (featured / "params.yaml").write_text(yaml.safe_dump(params))
    proc = train_process(featured)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "epoch 2:" not in proc.stderr.readline():
        pass
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # reaped, its pipe closed
    after = {p.name: p.read_bytes() for p in (featured / "models").iterdir()}
    assert after == before, "a killed training changed or half-wrote its outputs"

    params["train"].update(epochs=3, patience=4)
    (featured / "params.yaml").write_text(yaml.safe_dump(params))
    train_to_the_end(featured)
    assert (
        read_json(featured / "models/train.json")["run_id"]
        != read_json_bytes(before["train.json"])["run_id"]
    )


def read_json_bytes(data: bytes) -> dict:
    import json

    return json.loads(data)
