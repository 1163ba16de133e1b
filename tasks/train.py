"""Train: the delay model on the train window, early-stopped on valid, tracked in MLflow.

    models/model.pt      checkpoint: the model config beside the weights
    models/train.json    the MLflow run id and what training did (read by evaluate)

Both are written to a temporary name and renamed, model first: a training killed at any
point leaves the previous outputs whole, and the next run simply runs again.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.core import clock
from tasks.core.config import Params, TrainParams, load_params
from tasks.core.io import read_json, remove_stale_temps, require, write_json
from tasks.core.paths import Paths
from tasks.core.progress import Progress
from tasks.ml.encoded import encode_window, window_rows
from tasks.ml.encoders import Encoders
from tasks.ml.feature_store import (
    day_rows_file,
    days_folder,
    read_day_record,
    read_window,
    read_windows,
)
from tasks.ml.features import LABEL

if TYPE_CHECKING:  # torch is imported only when training runs
    from tasks.ml.model import ModelConfig
    from tasks.ml.training import FitResult, FitSettings, Tensors

log = logging.getLogger(__name__)


def load_split(paths: Paths, name: str) -> pd.DataFrame:
    return read_window(paths.features, name)


def tensors(frame: pd.DataFrame, encoders: Encoders) -> Tensors:
    from tasks.ml.training import Tensors

    codes, numeric = encoders.transform(frame)
    return Tensors.from_arrays(codes, numeric, frame[LABEL].to_numpy(dtype=np.float32))


def model_config(cfg: TrainParams, encoders: Encoders, train: Tensors) -> ModelConfig:
    from tasks.ml.model import ModelConfig

    return ModelConfig(
        cardinalities=encoders.cardinalities(),
        n_numeric=int(train.numeric.shape[1]),
        max_embedding_dim=cfg.max_embedding_dim,
        hidden=list(cfg.hidden),
        dropout=cfg.dropout,
        members=cfg.members,
    )


def epoch_logger(client: Any, run_id: str) -> Callable[[int, dict[str, float]], None]:
    """Each epoch's metrics as one batch call (about 5 ms to the local store).

    Synchronous on purpose: MLflow's asynchronous logging starts worker threads that
    compete with torch's for the cores; measured here they slowed training by ~20%,
    far more than the write itself costs (bench/train.py).
    """
    from mlflow.entities import Metric

    from tasks.core import tracking

    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        stamp = int(time.time() * 1000)
        batch = [Metric(tracking.epoch_metric(k), v, stamp, epoch) for k, v in metrics.items()]
        client.log_batch(run_id, metrics=batch)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    return log_epoch


def run(params: Params, paths: Paths) -> dict[str, Any]:
    import mlflow

    from tasks.core import journal, mlflow_runs, tracking
    from tasks.ml.model import save_checkpoint
    from tasks.ml.training import FitSettings, Tensors

    cfg = params.train
    remove_stale_temps(paths.models)  # a checkpoint write cut short by a kill
    encoders = Encoders.from_json(read_json(require(paths.encoders, "featurize")))
    scratch = paths.var / "train"  # the encoded windows, memory-mapped (tasks/ml/encoded.py)
    encoded = {n: encode_window(paths.features, n, encoders, scratch) for n in ("train", "valid")}
    train, valid = (Tensors.from_arrays(e.codes, e.numeric, e.y) for e in encoded.values())
    spans = windows(paths.features)
    config = model_config(cfg, encoders, train)
    settings = FitSettings(**{k: getattr(cfg, k) for k in FitSettings.__dataclass_fields__})

    experiment = tracking.start(paths)
    client = mlflow.MlflowClient()
    mlflow_runs.end_orphaned_runs(client, paths)  # earlier trainings that were killed
    with (
        journal.intent(paths, "training") as entry,
        mlflow.start_run(
            experiment_id=experiment,
            tags={
                **mlflow_runs.process_tags(),
                "mlflow.note.content": description(spans),
            },
        ) as active,  # fmt: skip
        mlflow_runs.ended_if_stopped(client, active.info.run_id),
    ):
        run_id = active.info.run_id
        entry.note(mlflow_run_id=run_id)
        log_run_inputs(params, paths, config)
        started = time.perf_counter()
        result = fit_with_progress(train, valid, config, settings, epoch_logger(client, run_id))
        seconds = time.perf_counter() - started
        mlflow.log_metrics({"train/best_epoch": result.best_epoch, "train/seconds": seconds})
        save_checkpoint(result.model.cpu(), paths.checkpoint)
        mlflow.log_artifact(str(paths.checkpoint), artifact_path="model")
        mlflow.log_artifact(str(paths.encoders), artifact_path="model")
    info = {"run_id": run_id, "experiment_id": experiment,
            **train_summary(result, train, seconds), **spans,
            # The retrain policy's clock (schedule.retrain_when.days_since_training).
            "finished": clock.stamp()}  # fmt: skip
    write_json(paths.train_record, info)
    shutil.rmtree(scratch, ignore_errors=True)
    log.info("trained in %.1fs, best epoch %d; MLflow run %s", seconds, result.best_epoch, run_id)
    return info


def log_run_inputs(params: Params, paths: Paths, config: ModelConfig) -> None:
    """The active MLflow run's params, lineage tags and the three windows as datasets."""
    import mlflow

    from tasks.core import tracking

    flat = {"train": params.train.model_dump(), "featurize": params.featurize.model_dump()}
    mlflow.log_params(tracking.flatten(flat))
    mlflow.log_params(tracking.flatten({"model": asdict(config)}))
    mlflow.set_tags(tracking.lineage_tags(paths, inputs_of="featurize"))
    for name, dataset in window_datasets(paths.features).items():
        context = {"train": "training", "valid": "validation"}.get(name, "testing")
        mlflow.log_input(dataset, context=context)


def window_datasets(features: Path) -> dict[str, Any]:
    """Each window as an MLflow dataset: its days' folder, a digest of what its days were
    built from, its rows, and the schema of its rows; no row is read beyond one day's."""
    import hashlib

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.pandas_dataset import from_pandas

    class WindowDataset(MetaDataset):
        def __init__(self, rows: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.rows = rows

        @property
        def profile(self) -> dict[str, int]:
            return {"num_rows": self.rows}

    with warnings.catch_warnings():  # two source classes match a local path; either will do
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(days_folder(features)))
    datasets = {}
    for name, days in read_windows(features).items():
        inputs = "".join(read_day_record(features, d)["inputs"] for d in days)
        first = pd.read_parquet(day_rows_file(features, days[0]))
        with warnings.catch_warnings():
            # MLflow hints about integer columns in the schema it infers: not a logged input's.
            warnings.simplefilter("ignore", UserWarning)
            schema = from_pandas(first, targets=LABEL).schema
        datasets[name] = WindowDataset(
            window_rows(features, days), source=source, name=name,
            digest=hashlib.sha256(inputs.encode()).hexdigest()[:16], schema=schema,
        )  # fmt: skip
    return datasets


def fit_with_progress(
    train: Tensors,
    valid: Tensors,
    config: ModelConfig,
    settings: FitSettings,
    log_epoch: Callable[[int, dict[str, float]], None],
) -> FitResult:
    from tasks.ml.training import fit

    with Progress("train", total=settings.epochs, unit="epoch") as bar:

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            log_epoch(epoch, metrics)
            bar.update(1, valid_pr_auc=f"{metrics['valid_pr_auc']:.4f}")

        return fit(train, valid, config, settings, on_epoch=on_epoch)


def train_summary(result: FitResult, train: Tensors, seconds: float) -> dict[str, Any]:
    from tasks.ml.training import positive_weight

    return {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": round(seconds, 2),
        "pos_weight": round(positive_weight(train.y), 6),
        "device": str(next(result.model.parameters()).device),
    }


def windows(features: Path) -> dict[str, Any]:
    """Rows and first and last day of each window: the release re-scores a champion only
    on days after its valid window, which it never trained or tuned on."""
    chosen = read_windows(features)
    return {
        "rows": {name: window_rows(features, days) for name, days in chosen.items()},
        "window": {name: [days[0], days[-1]] for name, days in chosen.items()},
    }


def description(split: dict[str, Any]) -> str:
    """What the run is, for its page in the MLflow UI."""
    spans = {name: f"{first} to {last} ({split['rows'][name]:,} rows)"
             for name, (first, last) in split["window"].items()}  # fmt: skip
    return (
        f"A candidate model, trained on {spans['train']}, early-stopped on {spans['valid']} "
        f"and tested on {spans['test']}; the evaluate stage adds the baselines on the same "
        "rows, the release gate decides whether it becomes the champion."
    )


def main(argv: list[str] | None = None) -> int:
    from tasks.core.entry import stage_main

    def work() -> None:
        paths = Paths.at()
        run(load_params(paths.params), paths)

    return stage_main("train", __doc__ or "", work, argv)


if __name__ == "__main__":
    # Run the importable module, not __main__, so log records read "tasks.train".
    from tasks import train

    raise SystemExit(train.main())
