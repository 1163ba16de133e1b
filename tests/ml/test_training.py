"""The model and its training loop on small synthetic tensors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from tasks.ml.model import DelayModel, load_checkpoint, save_checkpoint
from tasks.ml.training import Tensors, fit, positive_weight
from tests.factories import fit_settings, model_config

CONFIG = model_config([4, 3], 5, hidden=[16], dropout=0.0, members=2)


def synthetic(n: int, seed: int) -> Tensors:
    """A delay that depends on one category and one number, with noise."""
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, 4, n), rng.integers(0, 3, n)], axis=1)
    numeric = rng.normal(size=(n, 5)).astype(np.float32)
    logit = 1.5 * numeric[:, 0] + (codes[:, 0] == 2) * 2.0 - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return Tensors.from_arrays(codes, numeric, y)


def weights_hash(model: DelayModel) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.cpu().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow  # starts processes (or trains): make test-fast leaves it out
def test_overfits_one_batch() -> None:
    batch = synthetic(64, seed=1)
    settings = fit_settings(
        epochs=300, batch_size=64, lr=1e-2, weight_decay=0.0, patience=300, device="cpu"
    )
    result = fit(
        batch,
        batch,
        model_config([4, 3], 5, hidden=[64, 64], dropout=0.0, members=1),
        settings,
    )
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.05 * losses[0]
    proba = result.model.predict_proba(batch.codes, batch.numeric)
    assert ((proba > 0.5).float() == batch.y).all()


def test_training_is_bit_identical_on_cpu() -> None:
    train, valid = synthetic(2000, seed=2), synthetic(500, seed=3)
    settings = fit_settings(epochs=3, batch_size=128, device="cpu")
    first = fit(train, valid, CONFIG, settings)
    second = fit(train, valid, CONFIG, settings)
    assert weights_hash(first.model) == weights_hash(second.model)
    assert first.history == second.history
    third = fit(train, valid, CONFIG, fit_settings(epochs=3, batch_size=128, device="cpu", seed=7))
    assert weights_hash(third.model) != weights_hash(first.model)  # the seed matters


def test_learns_and_stays_calibrated() -> None:
    train, valid = synthetic(6000, seed=4), synthetic(3000, seed=5)
    result = fit(train, valid, CONFIG, fit_settings(epochs=8, batch_size=256, device="cpu"))
    assert result.history[-1]["valid_pr_auc"] > valid.y.mean().item() + 0.2
    proba = result.model.predict_proba(valid.codes, valid.numeric)
    # Weighted training plus the logit offset: the mean prediction tracks the base rate.
    assert abs(proba.mean().item() - valid.y.mean().item()) < 0.05
    assert result.model.config.logit_offset == -np.log(positive_weight(train.y))


def test_unknown_categories_stay_neutral_through_training() -> None:
    train, valid = synthetic(2000, seed=9), synthetic(500, seed=10)
    model = fit(train, valid, CONFIG, fit_settings(epochs=2, batch_size=64, device="cpu")).model
    for embedding in model.embeddings:
        assert torch.count_nonzero(embedding.weight[0]) == 0  # index 0: unseen or rare values


def test_early_stopping_keeps_the_best_epoch() -> None:
    train, valid = synthetic(400, seed=6), synthetic(400, seed=7)
    result = fit(
        train,
        valid,
        CONFIG,
        fit_settings(epochs=40, batch_size=32, lr=5e-2, patience=2, device="cpu"),
    )
    scores = [h["valid_pr_auc"] for h in result.history]
    assert result.epochs_run < 40 and result.epochs_run - result.best_epoch == 2
    assert scores[result.best_epoch - 1] == max(scores)


def test_checkpoint_holds_config_and_weights(tmp_path) -> None:
    model = DelayModel(CONFIG)
    save_checkpoint(model, tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config == CONFIG and weights_hash(loaded) == weights_hash(model)
    batch = synthetic(10, seed=8)
    assert torch.equal(
        loaded.predict_proba(batch.codes, batch.numeric),
        model.predict_proba(batch.codes, batch.numeric),
    )
    # The same weights are the same bytes, wherever they are saved: DVC's hash of
    # models/model.pt changes only when the model does.
    save_checkpoint(model, tmp_path / "elsewhere.pt")
    assert (tmp_path / "elsewhere.pt").read_bytes() == (tmp_path / "m.pt").read_bytes()


def test_ensemble_members_differ_and_predictions_are_their_mean() -> None:
    train, valid = synthetic(2000, seed=11), synthetic(300, seed=12)
    config = model_config([4, 3], 5, hidden=[16], members=3)
    model = fit(train, valid, config, fit_settings(epochs=2, batch_size=128, device="cpu")).model
    logits = model(valid.codes, valid.numeric)
    assert logits.shape == (3, len(valid))
    assert not torch.allclose(logits[0], logits[1])  # independently initialised members
    expected = torch.sigmoid(logits + model.config.logit_offset).mean(0)
    assert torch.allclose(model.predict_proba(valid.codes, valid.numeric), expected)
    # A member's output depends on its own weights only.
    before = logits[1].detach().clone()
    with torch.no_grad():
        model.mlp[-1].weight[0].add_(1.0)
    assert torch.equal(model(valid.codes, valid.numeric)[1], before)
