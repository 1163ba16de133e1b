"""The release's smoke test, run in a fresh process: load the registered model by its
registry URI, predict the input example and a sample of test rows, compare with the
evaluate stage's predictions, and time single-row predictions.

    python -m tasks.smoke MODEL_URI ROWS.parquet RESULT.json [--samples N] [--tolerance T]

ROWS.parquet holds raw joined rows and an `expected` column (evaluate's probability).
Exit 0 and RESULT.json written when every check passes; otherwise exit 1 with the reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.io import write_json


def check(model_uri: str, rows_file: Path, samples: int, tolerance: float) -> dict[str, float]:
    import mlflow

    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_uri)
    load_seconds = time.perf_counter() - started
    from tasks.serving import plain_rows

    example = model.input_example
    if example is None:
        raise AssertionError("the model carries no input example")
    on_example = model.predict(example)
    if len(on_example) != len(example) or not on_example["probability"].between(0, 1).all():
        raise AssertionError("predictions on the input example are not probabilities, one per row")
    rows = pd.read_parquet(rows_file)
    predicted = model.predict(plain_rows(rows))["probability"].to_numpy()
    difference = float(np.abs(predicted - rows["expected"].to_numpy()).max())
    if not difference <= tolerance:
        raise AssertionError(
            f"predictions differ from the evaluate stage's by up to {difference:.3g} "
            f"(tolerance {tolerance:g})"
        )
    single = plain_rows(rows.head(samples))
    for i in range(min(len(single), 5)):  # first calls: lazy initialisation, not latency
        model.predict(single.iloc[[i]])
    times = []
    for i in range(len(single)):
        started = time.perf_counter()
        model.predict(single.iloc[[i]])
        times.append((time.perf_counter() - started) * 1000)
    return {
        "load_seconds": round(load_seconds, 3),
        "example_rows": len(example),
        "rows_compared": len(rows),
        "max_abs_difference": difference,
        "latency_p50_ms": float(np.percentile(times, 50)),
        "latency_p99_ms": float(np.percentile(times, 99)),
        "latency_samples": len(times),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.smoke", description=__doc__.split("\n")[0]
    )
    parser.add_argument("model_uri")
    parser.add_argument("rows", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args(argv)
    try:
        result = check(args.model_uri, args.rows, args.samples, args.tolerance)
    except Exception as exc:  # any failure fails the smoke test, with its reason
        print(f"smoke test failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    write_json(args.result, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
