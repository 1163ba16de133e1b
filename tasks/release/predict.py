"""Score a file of raw joined rows with the champion.

    plumber predict --input rows.csv --output scored.parquet

Input and output are CSV or Parquet, by suffix. The output holds the input rows plus
`probability` and `warn`; it is written to a temporary name and renamed, so a failed run
leaves no partial file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.core.config import Params
from tasks.core.errors import StepError
from tasks.core.io import atomic_path
from tasks.core.paths import Paths

FORMATS = (".csv", ".parquet")


def _format(path: Path) -> str:
    if path.suffix.lower() not in FORMATS:
        raise StepError(f"{path}: use a .csv or .parquet file")
    return path.suffix.lower()


def read_rows(path: Path) -> pd.DataFrame:
    kind = _format(path)
    if not path.exists():
        raise StepError(f"{path} not found")
    try:
        return pd.read_csv(path) if kind == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # a malformed file: name it and what the reader said
        raise StepError(f"cannot read {path}: {exc}") from None


def run(params: Params, paths: Paths, source: Path, target: Path) -> int:
    import mlflow

    from tasks.ml.inference import plain_rows
    from tasks.release import registry

    kind = _format(target)
    rows = read_rows(source)
    name = params.release.model_name
    client = registry.connect(paths)
    current = registry.champion(client, name)
    if current is None:
        raise StepError(f"{name} has no champion yet: run `plumber release` first")
    model = mlflow.pyfunc.load_model(f"models:/{name}@{registry.CHAMPION}")
    from mlflow.exceptions import MlflowException

    try:
        scored = model.predict(plain_rows(rows))
    except (ValueError, MlflowException) as exc:  # missing columns, values of the wrong type
        raise StepError(f"{source}: {exc}") from None
    out = rows.assign(probability=scored["probability"].to_numpy(), warn=scored["warn"].to_numpy())
    with atomic_path(target) as tmp:
        if kind == ".csv":
            out.to_csv(tmp, index=False)
        else:
            out.to_parquet(tmp, index=False)
    return len(out)
