"""The service metric and the threshold, against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.ml.metrics import (
    NEVER,
    choose_threshold,
    expected_calibration_error,
    metric_block,
    recall_at_precision,
)

# Sorted by score: 0.9 (1), 0.8 (0), 0.7 (1), 0.6 (1), 0.5 (0), 0.4 (0), 0.3 (1), 0.2 (0)
Y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
P = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])


def test_recall_at_precision_by_hand() -> None:
    # Warn at >= 0.6: 3 of 4 warnings right (0.75), 3 of 4 delays found -> recall 0.75.
    # Warn at >= 0.3: 4 of 7 right (0.571 < 0.6). So at precision 0.6 the best is 0.75.
    assert recall_at_precision(Y, P, 0.6) == 0.75
    # At precision 0.8 only "warn at >= 0.9" qualifies (1/1): recall 0.25.
    assert recall_at_precision(Y, P, 0.8) == 0.25
    assert recall_at_precision(np.zeros(4), P[:4], 0.6) == 0.0


def test_threshold_is_the_highest_recall_point_meeting_the_target() -> None:
    # Thresholds 0.6 (3/4 right) and 0.5 (3/5 = 0.6 right) both reach recall 0.75: the
    # higher one wins, for the same recall at a better precision.
    assert choose_threshold(Y, P, 0.6) == 0.6
    assert choose_threshold(Y, P, 0.7) == 0.6  # 0.5 no longer qualifies either way
    assert choose_threshold(Y, P, 0.99) == 0.9


def test_unreachable_target_never_warns() -> None:
    y, p = np.array([0, 0, 1]), np.array([0.9, 0.8, 0.1])  # the delay scores lowest: 1/3 at best
    assert recall_at_precision(y, p, 0.6) == 0.0
    assert choose_threshold(y, p, 0.6) == NEVER
    assert metric_block(y, p, NEVER, 0.6, bins=10)["recall"] == 0.0


def test_block_at_the_threshold() -> None:
    block = metric_block(Y, P, threshold=0.6, min_precision=0.6, bins=10)
    assert block["precision"] == 0.75 and block["recall"] == 0.75
    assert block["accuracy"] == 6 / 8
    assert block["rows"] == 8 and block["positives"] == 4
    assert block["brier"] == pytest.approx(np.mean((P - Y) ** 2))


def test_ece_by_hand() -> None:
    # Two bins used: [0.1]*2 with outcome rate 0.5 -> 0.4 off; [0.9]*2 rate 1.0 -> 0.1 off.
    y, p = np.array([0, 1, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
