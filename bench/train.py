"""Benchmark: the real training step against a bare PyTorch loop, and stage wall times.

    python bench/train.py                # features of the working copy (data/features)
    python bench/train.py --full-year    # builds the whole of 2013 in a temporary project first

Samples per second of `tasks.ml.training.fit` (validation scoring each epoch, MLflow logging
on, to a temporary store) against a bare loop over the same ready tensors with the same
model and batch size (forward, backward, step; nothing else), in the same run. Goal: ratio
>= 0.9. With --full-year it also times the featurize and train stages on the full year.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bare_loop(train, config, settings) -> float:
    """Samples/s of forward, backward and step over shuffled slices, nothing else."""
    import torch
    from torch import nn

    from tasks.ml.model import DelayModel, make_deterministic
    from tasks.ml.training import positive_weight

    make_deterministic(settings.seed, settings.threads)
    model = DelayModel(config)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(positive_weight(train.y)))
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    order = torch.Generator().manual_seed(settings.seed)
    started = time.perf_counter()
    for _ in range(settings.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=order)
        for start in range(0, len(train), settings.batch_size):
            idx = perm[start : start + settings.batch_size]
            logits = model(train.codes[idx], train.numeric[idx])
            loss = loss_fn(logits, train.y[idx].expand_as(logits))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return settings.epochs * len(train) / (time.perf_counter() - started)


def real_step(train, valid, config, settings, store: Path) -> float:
    """Samples/s of the train stage's own loop, with its MLflow epoch logging."""
    import mlflow

    from tasks.ml.training import fit
    from tasks.train import epoch_logger

    store.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("bench", artifact_location=(store / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        started = time.perf_counter()
        fit(train, valid, config, settings, on_epoch=epoch_logger(client, run.info.run_id))
        seconds = time.perf_counter() - started
    return settings.epochs * len(train) / seconds


def step_ratio(features: Path, epochs: int, store: Path, repeats: int = 3) -> None:
    from tasks.core.config import load_params
    from tasks.core.io import read_json
    from tasks.core.paths import Paths
    from tasks.ml.encoders import Encoders
    from tasks.ml.training import FitSettings
    from tasks.train import load_split, model_config, tensors

    params = load_params(ROOT / "params.yaml").train
    paths = Paths.at(features.parents[1])  # the project whose data/features these are
    encoders = Encoders.from_json(read_json(paths.encoders))
    train = tensors(load_split(paths, "train"), encoders)
    valid = tensors(load_split(paths, "valid"), encoders)
    config = model_config(params, encoders, train)
    # Early stopping off: both loops run the same number of epochs.
    settings = FitSettings(
        seed=params.seed, threads=params.threads, device="cpu", epochs=epochs,
        batch_size=params.batch_size, lr=params.lr, weight_decay=params.weight_decay,
        patience=epochs,
    )  # fmt: skip
    # Warm up both paths once (first-call allocations and lazy imports), then alternate
    # the two so drift on a shared machine hits both alike; compare the medians.
    warm = FitSettings(**{**settings.__dict__, "epochs": 1, "patience": 1})
    bare_loop(train, config, warm)
    real_step(train, valid, config, warm, store / "warm-up")
    bare, real = [], []
    for round_ in range(repeats):
        bare.append(bare_loop(train, config, settings))
        real.append(real_step(train, valid, config, settings, store / f"round-{round_}"))
    b, r = statistics.median(bare), statistics.median(real)
    print(
        f"training rows {len(train):,}, batch {settings.batch_size}, "
        f"{epochs} epochs x {repeats} rounds, {params.threads} threads"
    )
    print(f"  bare loop (forward, backward, step)      {b:12,.0f} samples/s (median)")
    print(f"  real step (+ valid scoring, MLflow on)   {r:12,.0f} samples/s (median)")
    print(f"  ratio: {r / b:.2f}  (goal >= 0.90)")


def stage_times(workdir: Path) -> Path:
    """Build the whole of 2013 in a temporary project; time featurize and train."""
    project = workdir / "project"
    project.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        (project / name).write_text((ROOT / name).read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    plumber = [sys.executable, "-m", "flows.cli", "--root", str(project)]

    def timed(label: str, *args: str) -> None:
        started = time.perf_counter()
        subprocess.run(
            args,
            cwd=project,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"  {label:<36}{time.perf_counter() - started:8.1f} s")

    print("full year (2013) in a temporary project:")
    timed("demo init (336,776 flights)", *plumber, "demo", "init", "--now", "2014-01-01")
    timed("collect", sys.executable, "-m", "tasks.collect")
    timed("validate", sys.executable, "-m", "tasks.validate")
    timed("featurize", sys.executable, "-m", "tasks.featurize")
    timed("train (early stopping, MLflow)", sys.executable, "-m", "tasks.train")
    return project / "data" / "features"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--full-year", action="store_true", help="build and time the full year first"
    )
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plumber-bench-train-") as tmp:
        features = stage_times(Path(tmp)) if args.full_year else ROOT / "data" / "features"
        if not (features / "encoders.json").exists():
            raise SystemExit(f"no features at {features}: run `make run` first, or use --full-year")
        step_ratio(features, args.epochs, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
