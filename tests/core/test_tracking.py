"""MLflow metric names: grouped by window, then by model, as the MLflow UI shows them."""

from __future__ import annotations

import pytest

from tasks.core.tracking import epoch_metric, experiment_tags, metric_name


@pytest.mark.parametrize(
    ("key", "model", "name"),
    [
        ("train_loss", None, "train/loss"),
        ("valid_pr_auc", None, "valid/pr_auc"),
        ("valid_log_loss", None, "valid/log_loss"),
        ("recall_at_precision", "model", "test/model/recall_at_precision"),
        ("valid_recall_at_precision", "model", "valid/model/recall_at_precision"),
        ("pr_auc", "hist_gradient_boosting", "test_baseline/hist_gradient_boosting/pr_auc"),
        ("threshold", "majority", "test_baseline/majority/threshold"),
    ],
)
def test_metric_names_say_their_window_then_their_model(
    key: str, model: str | None, name: str
) -> None:
    assert metric_name(key, model) == name


def test_the_per_epoch_curves_sort_before_every_single_value() -> None:
    """The MLflow UI orders chart sections by name: the curves must come first."""
    curves = [epoch_metric(k) for k in ("train_loss", "valid_pr_auc", "valid_log_loss")]
    values = [metric_name("recall_at_precision", "hist_gradient_boosting"),
              metric_name("valid_recall_at_precision", "model"), "train/best_epoch"]  # fmt: skip
    assert sorted(curves + values)[:3] == sorted(curves)
    assert curves[0] == "epoch/train_loss"


def test_the_models_scores_sort_before_every_baselines() -> None:
    model = [metric_name(k, "model") for k in ("pr_auc", "recall_at_precision")]
    baselines = [metric_name("pr_auc", b) for b in ("hist_gradient_boosting",
                                                    "logistic_regression", "majority")]  # fmt: skip
    assert sorted(model + baselines)[:2] == sorted(model)


def test_every_experiment_of_ours_is_a_model_training_one_with_a_description() -> None:
    for name, start in [("plumber", "Plumber's training runs"),
                        ("plumber-data", "Plumber's data versions"),
                        ("plumber-reproduce", "Rebuilds of released models")]:  # fmt: skip
        tags = experiment_tags(name)
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        assert tags["mlflow.note.content"].startswith(start)
