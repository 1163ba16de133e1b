"""Scoring: raw joined rows in, the delay probability (and the warn flag) out.

The one scoring path: evaluate scores its windows with `probabilities`, and the released
model (tasks/release/packaging.py), so also the smoke test and the champion's re-scoring,
runs `score_rows`, which calls it: `Encoders.transform` on raw joined rows, then the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.ml.encoders import Encoders
from tasks.ml.features import INPUT, conform


def probabilities(model: Any, encoders: Encoders, rows: pd.DataFrame) -> np.ndarray:
    """The model's delay probability (float64) for each raw joined row."""
    import torch

    codes, numeric = encoders.transform(rows)
    proba = model.predict_proba(torch.from_numpy(codes), torch.from_numpy(numeric)).numpy()
    return proba.astype(np.float64)


def score_rows(
    model: Any, encoders: Encoders, threshold: float, rows: pd.DataFrame
) -> pd.DataFrame:
    """probability (float64) and warn (probability >= threshold) for each raw joined row."""
    proba = probabilities(model, encoders, rows)
    return pd.DataFrame({"probability": proba, "warn": proba >= threshold}, index=rows.index)


def plain_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The INPUT columns with numpy dtypes and None for missing strings: what JSON, CSV
    and MLflow's schema checks produce and accept."""
    rows = conform(rows)[list(INPUT)]
    strings = [c for c, (kind, _) in INPUT.items() if kind == "string"]
    plain = rows.astype({c: object for c in strings})
    for column in strings:
        plain[column] = plain[column].where(rows[column].notna(), None)
    return plain
