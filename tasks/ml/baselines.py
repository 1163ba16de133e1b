"""The baselines every candidate is shown against, on the same rows and inputs.

- majority: the train window's delay rate for every flight (never warns: a model that
  predicts "nothing happens" is ~75% accurate and worth nothing);
- logistic_regression: one-hot categories plus the scaled numeric features;
- hist_gradient_boosting: gradient-boosted trees on the same encoded inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (codes, numeric) -> probabilities


def majority(codes: np.ndarray, numeric: np.ndarray, y: np.ndarray, seed: int) -> Predict:
    rate = float(y.mean())
    return lambda c, n: np.full(len(c), rate)


def logistic_regression(
    codes: np.ndarray, numeric: np.ndarray, y: np.ndarray, seed: int
) -> Predict:
    onehot = OneHotEncoder(handle_unknown="ignore").fit(codes)

    def inputs(c: np.ndarray, n: np.ndarray) -> sparse.csr_matrix:
        return sparse.hstack([onehot.transform(c), sparse.csr_matrix(n)]).tocsr()

    model = LogisticRegression(max_iter=2000, random_state=seed).fit(inputs(codes, numeric), y)
    return lambda c, n: model.predict_proba(inputs(c, n))[:, 1]


def hist_gradient_boosting(
    codes: np.ndarray, numeric: np.ndarray, y: np.ndarray, seed: int
) -> Predict:
    n_cat = codes.shape[1]
    model = HistGradientBoostingClassifier(
        categorical_features=list(range(n_cat)), random_state=seed
    ).fit(np.hstack([codes, numeric]), y)
    return lambda c, n: model.predict_proba(np.hstack([c, n]))[:, 1]


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, int], Predict]] = {
    "majority": majority,
    "logistic_regression": logistic_regression,
    "hist_gradient_boosting": hist_gradient_boosting,
}
