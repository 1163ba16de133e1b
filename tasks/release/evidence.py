"""The gate's evidence: the candidate's evaluation, its smoke test and size, and the
champion re-scored beside it on the rows neither model ever saw.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

import pandas as pd

from tasks.core import tracking
from tasks.core.config import Params
from tasks.core.errors import StepError
from tasks.core.guard import run_guarded
from tasks.core.io import read_json, require
from tasks.core.paths import Paths
from tasks.ml.feature_store import read_window
from tasks.ml.features import LABEL
from tasks.ml.metrics import metric_block
from tasks.release import card
from tasks.release.gate import Evidence


def scored_test_rows(paths: Paths) -> pd.DataFrame:
    """The test window's raw joined rows with evaluate's probability as `expected`."""
    test = read_window(paths.features, "test")
    scored = pd.read_parquet(require(paths.test_predictions, "evaluate"))
    keys = ["date", "carrier", "flight", "origin"]
    if len(scored) != len(test) or not scored[keys].equals(test[keys]):
        raise StepError("reports/test_predictions.parquet does not match the test features:"
                        " run evaluate again (dvc repro)")  # fmt: skip
    return test.assign(expected=scored["proba"].to_numpy())


def smoke_test(paths: Paths, params: Params, uri: str, test: pd.DataFrame) -> dict[str, Any]:
    """Run tasks.release.smoke in a fresh interpreter against evaluate's own predictions."""
    sample = test.sample(n=min(params.release.smoke_rows, len(test)), random_state=0)
    work = paths.release_work / "smoke"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sample.to_parquet(work / "rows.parquet")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(paths),
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # fmt: skip
    cfg = params.release
    argv = [sys.executable, "-m", "tasks.release.smoke", uri, str(work / "rows.parquet"),
            str(work / "result.json"), "--samples", str(cfg.latency_samples),
            "--rounds", str(cfg.latency_rounds),
            "--tolerance", str(cfg.smoke_tolerance)]  # fmt: skip
    try:
        # Guarded: the smoke process never outlives this one, and past the limit it stops.
        done = run_guarded(argv, timeout=cfg.smoke_timeout_seconds, cwd=paths.root, env=env)
    except subprocess.TimeoutExpired:
        raise StepError(
            f"the smoke test did not finish within {cfg.smoke_timeout_seconds:g} s "
            "(release.smoke_timeout_seconds); it was stopped"
        ) from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise StepError(lines[-1] if lines else f"smoke test exited {done.returncode}")
    return dict(read_json(work / "result.json"))


def gather(
    params: Params,
    metrics: dict[str, Any],
    smoke: dict[str, Any],
    size: float,
    champion: Any,
    test: pd.DataFrame,
    record_gaps: list[str],
) -> Evidence:
    champion_block = candidate_block = None
    if champion is not None:
        champion_block, candidate_block = rescore_champion(
            params, champion, test, metrics["threshold"]
        )
    return Evidence(
        candidate=metrics["model"],
        baselines=metrics["baselines"],
        origin_slices=metrics["slices"]["origin"],
        latency_p99_ms=smoke["latency_p99_ms"],
        size_mb=size,
        champion=champion_block,
        candidate_on_shared_rows=candidate_block,
        record_gaps=tuple(record_gaps),
    )


def unseen_by(champion_tags: dict[str, str], test: pd.DataFrame) -> pd.Series:
    """The test rows on days after the champion's valid window: it never trained, stopped
    early or chose its threshold on them."""
    valid = card.window(champion_tags).get("valid")
    if not valid:
        raise StepError("the champion's version has no data.valid tag: cannot tell which "
                        "rows it never saw")  # fmt: skip
    last_seen = valid[1]
    return test["date"] > last_seen


def rescore_champion(
    params: Params, champion: Any, test: pd.DataFrame, candidate_threshold: float
) -> tuple[dict[str, float], dict[str, float]]:
    """The champion and the candidate scored on the same rows: the candidate's test days
    that neither model trained on. `test` carries the candidate's scores as `expected`."""
    import mlflow

    from tasks.ml.inference import plain_rows

    rows = test[unseen_by(champion.tags, test)]
    if rows.empty:
        raise StepError(
            f"none of the candidate's test days is newer than champion version "
            f"{champion.version}'s valid window: nothing fair to compare on"
        )
    name = params.release.model_name
    model = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
    # Its own threshold, as it is served (the threshold tag is rounded for people).
    served_threshold = float(model.unwrap_python_model().threshold)
    champion_scores = model.predict(plain_rows(rows))["probability"].to_numpy()
    y, target, bins = (
        rows[LABEL].to_numpy(),
        params.evaluate.min_precision,
        params.evaluate.calibration_bins,
    )
    # Each model at its own operating threshold, as each is (or would be) served.
    return (
        metric_block(y, champion_scores, served_threshold, target, bins),
        metric_block(y, rows["expected"].to_numpy(), candidate_threshold, target, bins),
    )
