"""Evaluate: the model on the newest unseen days, next to the baselines on the same rows.

Each model's operating threshold is chosen on the valid window to meet the precision
target; the test window is only measured.

    reports/metrics.json              {"model", "baselines", "slices", "threshold", "test_rows"}
    reports/plots/pr/<model>.csv      precision-recall curves (DVC plots)
    reports/plots/calibration/<model>.csv
    reports/plots/confusion.csv       actual vs predicted at the threshold
    reports/test_predictions.parquet  the model's probability for every test row

All metrics and the plots as PNG also go to the training's MLflow run.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.config import EvaluateParams, Params, load_params
from tasks.core.io import read_json, replace_dir, require, write_json, write_parquet
from tasks.core.paths import Paths
from tasks.ml.baselines import BASELINES
from tasks.ml.encoders import Encoders
from tasks.ml.feature_store import read_window
from tasks.ml.features import LABEL
from tasks.ml.inference import probabilities
from tasks.ml.metrics import (
    REPORTED,
    calibration_table,
    choose_threshold,
    metric_block,
    recall_at_precision,
)

log = logging.getLogger(__name__)

SLICE_METRICS = ("recall_at_precision", "pr_auc", "precision", "recall", "rows", "positives")


def slices(
    test: pd.DataFrame, proba: np.ndarray, threshold: float, cfg: EvaluateParams
) -> dict[str, Any]:
    """The model's metrics by origin airport and for the largest carriers."""
    y = test[LABEL].to_numpy()
    out: dict[str, Any] = {"origin": {}, "carrier": {}}
    carriers = test["carrier"].value_counts().head(cfg.top_carriers).index
    for kind, column, values in (
        ("origin", "origin", sorted(test["origin"].unique())),
        ("carrier", "carrier", list(carriers)),
    ):
        for value in values:
            rows = (test[column] == value).to_numpy()
            block = metric_block(
                y[rows], proba[rows], threshold, cfg.min_precision, cfg.calibration_bins
            )
            out[kind][str(value)] = {k: block[k] for k in SLICE_METRICS}
    return out


def curve_points(y: np.ndarray, proba: np.ndarray, points: int = 200) -> pd.DataFrame:
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, proba)
    keep = np.unique(np.linspace(0, len(recall) - 1, min(points, len(recall))).astype(int))
    return pd.DataFrame({"recall": recall[keep], "precision": precision[keep]})


def calibration_points(y: np.ndarray, proba: np.ndarray, bins: int) -> pd.DataFrame:
    return calibration_table(y, proba, bins)[["mean_predicted", "fraction_delayed"]]


def run(params: Params, paths: Paths) -> dict[str, Any]:
    import torch

    from tasks.ml.model import load_checkpoint

    cfg = params.evaluate
    trained = read_json(require(paths.train_record, "train"))
    encoders = Encoders.from_json(read_json(require(paths.encoders, "featurize")))
    require(paths.checkpoint, "train")
    frames = {n: read_window(paths.features, n) for n in ("train", "valid", "test")}
    labels = {n: f[LABEL].to_numpy() for n, f in frames.items()}

    torch.set_num_threads(params.train.threads)
    model = load_checkpoint(paths.checkpoint)
    # The model is scored as the released one will be (tasks/ml/inference.py); the
    # baselines on the same encoded rows.
    scorers: dict[str, Any] = {"model": lambda name: probabilities(model, encoders, frames[name])}
    encoded = {n: encoders.transform(frames[n]) for n in ("train", "valid", "test")}
    for name, make in BASELINES.items():
        started = time.perf_counter()
        predict = make(*encoded["train"], labels["train"], params.train.seed)
        scorers[name] = lambda window, predict=predict: predict(*encoded[window])
        log.info("baseline %s fitted in %.1fs", name, time.perf_counter() - started)

    blocks: dict[str, dict[str, float]] = {}
    probas: dict[str, np.ndarray] = {}
    for name, score in scorers.items():
        valid_p = score("valid").astype(np.float64)
        probas[name] = score("test").astype(np.float64)
        threshold = choose_threshold(labels["valid"], valid_p, cfg.min_precision)
        blocks[name] = metric_block(
            labels["test"], probas[name], threshold, cfg.min_precision, cfg.calibration_bins
        )
        blocks[name]["valid_recall_at_precision"] = recall_at_precision(
            labels["valid"], valid_p, cfg.min_precision
        )

    model_block = blocks.pop("model")
    report = {
        "model": model_block,
        "baselines": blocks,
        "slices": slices(frames["test"], probas["model"], model_block["threshold"], cfg),
        "threshold": model_block["threshold"],
        "test_rows": len(frames["test"]),
        "min_precision": cfg.min_precision,
        "test_window": [frames["test"]["date"].min(), frames["test"]["date"].max()],
    }
    _write_outputs(paths, report, frames["test"], labels["test"], probas, cfg)
    _log_to_mlflow(paths, trained["run_id"], report)
    return report


def _write_outputs(
    paths: Paths, report: dict[str, Any], test: pd.DataFrame, y: np.ndarray,
    probas: dict[str, np.ndarray], cfg: EvaluateParams,
) -> None:  # fmt: skip
    paths.reports.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=paths.reports, prefix=".plots."))
    try:
        for name, proba in probas.items():
            (staged / "pr").mkdir(exist_ok=True)
            (staged / "calibration").mkdir(exist_ok=True)
            curve_points(y, proba).to_csv(staged / "pr" / f"{name}.csv", index=False)
            calibration_points(y, proba, cfg.calibration_bins).to_csv(
                staged / "calibration" / f"{name}.csv", index=False
            )
        warn = (probas["model"] >= report["threshold"]).astype(int)
        pd.DataFrame({"actual": y.astype(int), "predicted": warn}).to_csv(
            staged / "confusion.csv", index=False
        )
        from tasks.ml.plots import save_pngs

        save_pngs(staged, report)
        replace_dir(staged, paths.plots)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    ids = test[["date", "carrier", "flight", "origin"]]
    write_parquet(paths.test_predictions, ids.assign(proba=probas["model"], delayed=y))
    write_json(paths.metrics, report)


def _log_to_mlflow(paths: Paths, run_id: str, report: dict[str, Any]) -> None:
    import mlflow
    from mlflow.entities import Metric

    from tasks.core import tracking

    tracking.start(paths)
    stamp = int(time.time() * 1000)
    metrics = [
        Metric(tracking.metric_name(key, name), value, stamp, 0)
        for name, block in {"model": report["model"], **report["baselines"]}.items()
        for key, value in block.items()
        if np.isfinite(value)
    ]
    client = mlflow.MlflowClient()
    client.log_batch(run_id, metrics=metrics)
    for png in sorted((paths.plots).glob("*.png")):
        client.log_artifact(run_id, str(png), artifact_path="evaluation")
    client.log_artifact(run_id, str(paths.metrics), artifact_path="evaluation")


def summary(report: dict[str, Any]) -> str:
    """Model and baselines side by side, as `plumber run` prints it."""
    rows = {"model": report["model"], **report["baselines"]}
    cols = REPORTED
    head = f"{'':<24}" + "".join(f"{c.replace('_at_precision', '@P'):>11}" for c in cols)
    lines = [f"test window {report['test_window'][0]}..{report['test_window'][1]}, "
             f"{report['test_rows']:,} flights; service metric: recall at precision >= "
             f"{report['min_precision']}", head]  # fmt: skip
    for name, block in rows.items():
        lines.append(f"{name:<24}" + "".join(f"{block[c]:>11.3f}" for c in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tasks.core.entry import stage_main

    def work() -> None:
        paths = Paths.at()
        print(summary(run(load_params(paths.params), paths)))

    return stage_main("evaluate", __doc__ or "", work, argv)


if __name__ == "__main__":
    # Run the importable module, not __main__, so log records read "tasks.evaluate".
    from tasks import evaluate

    raise SystemExit(evaluate.main())
