"""The training loop: whole tensors sliced into batches, weighted loss, early stopping.

Pure of files and tracking: `fit` takes tensors and reports each epoch through a
callback, so the train stage, the tests and the benchmark run the same code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from tasks.ml.model import DelayModel, ModelConfig, make_deterministic, pick_device


@dataclass(frozen=True)
class Tensors:
    codes: torch.Tensor  # [n, n_categorical] int64
    numeric: torch.Tensor  # [n, n_numeric] float32
    y: torch.Tensor  # [n] float32, 1 = delayed or cancelled

    @classmethod
    def from_arrays(cls, codes: np.ndarray, numeric: np.ndarray, y: np.ndarray) -> Tensors:
        """Tensors sharing the arrays' memory (memory-mapped ones stay on disk)."""
        return cls(
            torch.from_numpy(codes),
            torch.from_numpy(numeric),
            torch.from_numpy(y if y.dtype == np.float32 else y.astype(np.float32)),
        )

    def to(self, device: torch.device) -> Tensors:
        return Tensors(self.codes.to(device), self.numeric.to(device), self.y.to(device))

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class FitSettings:
    """How to fit: params.yaml's train section (no defaults here: that file is the one
    source of every tunable value)."""

    seed: int
    threads: int
    device: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int


@dataclass
class FitResult:
    model: DelayModel
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]


EpochCallback = Callable[[int, dict[str, float]], None]


def positive_weight(y: torch.Tensor) -> float:
    """negatives / positives: each class then carries the same total weight."""
    positives = float(y.sum())
    return (len(y) - positives) / positives if positives else 1.0


def fit(
    train: Tensors,
    valid: Tensors,
    config: ModelConfig,
    settings: FitSettings,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train with early stopping on the valid window's PR-AUC; return the best weights."""
    make_deterministic(settings.seed, settings.threads)
    device = pick_device(settings.device)
    weight = positive_weight(train.y)
    config = ModelConfig(**{**config.__dict__, "logit_offset": -math.log(weight)})
    model = DelayModel(config).to(device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, device=device))
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    order = torch.Generator().manual_seed(settings.seed)
    data = train.to(device)
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, settings.epochs + 1):
        train_loss = run_epoch(model, data, loss_fn, optimiser, settings.batch_size, order)
        metrics = {"train_loss": train_loss, **score(model, valid)}
        history.append(metrics)
        if on_epoch:
            on_epoch(epoch, metrics)
        if metrics["valid_pr_auc"] > best_score:
            best_score, best_epoch, best_state = (
                metrics["valid_pr_auc"],
                epoch,
                copy.deepcopy(model.state_dict()),
            )
        elif epoch - best_epoch >= settings.patience:
            break
    model.load_state_dict(best_state)
    return FitResult(model.eval(), best_epoch, epoch, history)


def run_epoch(
    model: DelayModel,
    data: Tensors,
    loss_fn: nn.Module,
    optimiser: torch.optim.Optimizer,
    batch_size: int,
    order: torch.Generator,
) -> float:
    """One pass over shuffled slices of the whole tensors; the mean training loss."""
    model.train()
    perm = torch.randperm(len(data), generator=order).to(data.y.device)
    total = 0.0
    for start in range(0, len(data), batch_size):
        idx = perm[start : start + batch_size]
        logits = model(data.codes[idx], data.numeric[idx])  # [members, batch]
        loss = loss_fn(logits, data.y[idx].expand_as(logits))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(idx)
    return total / len(data)


def score(model: DelayModel, valid: Tensors) -> dict[str, float]:
    proba = model.predict_proba(valid.codes, valid.numeric).double()
    y = valid.y.double()
    eps = 1e-7
    log_loss = -(y * torch.log(proba + eps) + (1 - y) * torch.log(1 - proba + eps)).mean()
    return {
        "valid_log_loss": float(log_loss),
        "valid_pr_auc": float(average_precision_score(y.numpy(), proba.numpy())),
    }
