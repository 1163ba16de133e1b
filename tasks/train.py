"""Train: the delay model on the train window, early-stopped on valid, tracked in MLflow.

    models/model.pt      checkpoint: the model config beside the weights
    models/train.json    the MLflow run id and what training did (read by evaluate)

Both are written to a temporary name and renamed, model first: a training killed at any
point leaves the previous outputs whole, and the next run simply runs again.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.core import clock
from tasks.core.config import Params, TrainParams, load_params
from tasks.core.io import read_json, remove_stale_temps, require, write_json
from tasks.core.paths import Paths
from tasks.core.progress import Progress
from tasks.ml.feature_store import days_folder, read_window
from tasks.ml.features import LABEL, Encoders

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

    from tasks.core import journal, runs, tracking
    from tasks.ml.model import save_checkpoint
    from tasks.ml.training import FitSettings

    cfg = params.train
    remove_stale_temps(paths.models)  # a checkpoint write cut short by a kill
    encoders = Encoders.from_json(read_json(require(paths.encoders, "featurize")))
    frames = {name: load_split(paths, name) for name in ("train", "valid", "test")}
    train, valid = tensors(frames["train"], encoders), tensors(frames["valid"], encoders)
    config = model_config(cfg, encoders, train)
    settings = FitSettings(**{k: getattr(cfg, k) for k in FitSettings.__dataclass_fields__})

    experiment = tracking.start(paths)
    client = mlflow.MlflowClient()
    runs.end_orphaned_runs(client, paths)  # earlier trainings that were killed
    with (
        journal.intent(paths, "training") as entry,
        mlflow.start_run(
            experiment_id=experiment,
            tags={
                **runs.process_tags(),
                "mlflow.note.content": description(windows(frames)),
            },
        ) as active,  # fmt: skip
        runs.ended_if_stopped(client, active.info.run_id),
    ):
        run_id = active.info.run_id
        entry.note(mlflow_run_id=run_id)
        log_run_inputs(params, paths, config, frames)
        started = time.perf_counter()
        result = fit_with_progress(train, valid, config, settings, epoch_logger(client, run_id))
        seconds = time.perf_counter() - started
        mlflow.log_metrics({"train/best_epoch": result.best_epoch, "train/seconds": seconds})
        save_checkpoint(result.model.cpu(), paths.checkpoint)
        mlflow.log_artifact(str(paths.checkpoint), artifact_path="model")
        mlflow.log_artifact(str(paths.encoders), artifact_path="model")
    info = {"run_id": run_id, "experiment_id": experiment,
            **train_summary(result, train, seconds), **windows(frames),
            # The retrain policy's clock (schedule.retrain_when.days_since_training).
            "finished": clock.stamp()}  # fmt: skip
    write_json(paths.train_record, info)
    log.info("trained in %.1fs, best epoch %d; MLflow run %s", seconds, result.best_epoch, run_id)
    return info


def log_run_inputs(
    params: Params, paths: Paths, config: ModelConfig, frames: dict[str, pd.DataFrame]
) -> None:
    """The active MLflow run's params, lineage tags and the three windows as datasets."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    from tasks.core import tracking

    flat = {"train": params.train.model_dump(), "featurize": params.featurize.model_dump()}
    mlflow.log_params(tracking.flatten(flat))
    mlflow.log_params(tracking.flatten({"model": asdict(config)}))
    mlflow.set_tags(tracking.lineage_tags(paths, inputs_of="featurize"))
    for name, frame in frames.items():
        with warnings.catch_warnings():
            # MLflow warns that two source classes match a local path, and hints about
            # integer columns in the schema it infers; neither applies to a logged input.
            warnings.simplefilter("ignore", UserWarning)
            source = str(days_folder(paths.features))
            dataset = from_pandas(frame, source=source, targets=LABEL, name=name)
            context = {"train": "training", "valid": "validation"}.get(name, "testing")
            mlflow.log_input(dataset, context=context)


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


def windows(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Rows and first and last day of each window: the release re-scores a champion only
    on days after its valid window, which it never trained or tuned on."""
    return {
        "rows": {name: len(frame) for name, frame in frames.items()},
        "window": {name: [frame["date"].min(), frame["date"].max()]
                   for name, frame in frames.items()},
    }  # fmt: skip


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
