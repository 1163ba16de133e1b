"""The service metric and the rest, as pure functions of labels and probabilities.

The service requirement: a delay warning must be right at least `min_precision` of the
time; within that, warn for as many delayed flights as possible. So the primary metric
is the best recall reachable with precision >= min_precision.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

NEVER = 1.0 + 1e-9  # a threshold above every probability: never warn
# The metrics shown for every model, the service metric first.
REPORTED = ("recall_at_precision", "precision", "recall", "pr_auc", "roc_auc", "log_loss",
            "brier", "ece", "accuracy")  # fmt: skip


def recall_at_precision(y: np.ndarray, proba: np.ndarray, min_precision: float) -> float:
    """The highest recall over all thresholds whose precision is at least min_precision."""
    if y.sum() == 0:
        return 0.0
    precision, recall, _ = precision_recall_curve(y, proba)
    reachable = recall[precision >= min_precision]
    return float(reachable.max()) if len(reachable) else 0.0


def choose_threshold(y: np.ndarray, proba: np.ndarray, min_precision: float) -> float:
    """The threshold (chosen on the valid window) that maximises recall at the precision
    target; NEVER when no threshold reaches the target."""
    if y.sum() == 0:
        return NEVER
    precision, recall, thresholds = precision_recall_curve(y, proba)
    ok = np.flatnonzero(precision[:-1] >= min_precision)  # the last point has no threshold
    if not len(ok):
        return NEVER
    # Of the thresholds with the best recall, the highest: same recall, better precision.
    best = ok[recall[ok] == recall[ok].max()].max()
    return float(thresholds[best])


def calibration_table(y: np.ndarray, proba: np.ndarray, bins: int) -> pd.DataFrame:
    """Per non-empty equal-width probability bin: the mean prediction, the observed rate
    and the bin's share of the rows. The one binning: the ECE and the plot both use it."""
    which = np.minimum((proba * bins).astype(int), bins - 1)
    grouped = pd.DataFrame({"bin": which, "p": proba, "y": y}).groupby("bin")
    return pd.DataFrame({
        "mean_predicted": grouped["p"].mean(),
        "fraction_delayed": grouped["y"].mean(),
        "share": grouped["y"].size() / len(y),
    })  # fmt: skip


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int) -> float:
    """Mean |predicted - observed| over equal-width probability bins, weighted by size."""
    table = calibration_table(y, proba, bins)
    gap = (table["mean_predicted"] - table["fraction_delayed"]).abs()
    return float((gap * table["share"]).sum())


def metric_block(
    y: np.ndarray, proba: np.ndarray, threshold: float, min_precision: float, bins: int
) -> dict[str, float]:
    warn = proba >= threshold
    hits = float((warn & (y == 1)).sum())
    both_classes = 0 < y.sum() < len(y)
    return {
        "recall_at_precision": recall_at_precision(y, proba, min_precision),
        "precision": hits / warn.sum() if warn.any() else 0.0,
        "recall": hits / y.sum() if y.sum() else 0.0,
        "pr_auc": float(average_precision_score(y, proba)) if y.sum() else 0.0,
        "roc_auc": float(roc_auc_score(y, proba)) if both_classes else float("nan"),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(brier_score_loss(y, proba)),
        "ece": expected_calibration_error(y, proba, bins),
        "accuracy": float((warn == (y == 1)).mean()),
        "threshold": float(threshold),
        "rows": len(y),
        "positives": int(y.sum()),
    }
