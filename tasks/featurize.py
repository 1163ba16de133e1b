"""Featurize: validated flights + origin weather + planes -> features, split by days.

    data/features/{train,valid,test}.parquet   raw joined rows (date, INPUT) and the label
    data/features/encoders.json                vocabularies and scalers, fitted on train only

The split is temporal: test is the newest `test_days` days, valid the `valid_days`
before them, train the rest (optionally only the newest `train_max_days`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from tasks.core.config import FeaturizeParams, load_params
from tasks.core.errors import StepError
from tasks.core.io import replace_dir, write_json, write_parquet
from tasks.core.paths import Paths
from tasks.ml.features import LABEL, Encoders, RowRules, build_rows, split_by_days

log = logging.getLogger(__name__)


def read_source(folder: Path) -> pd.DataFrame:
    parts = sorted(folder.glob("*.parquet"))
    if not parts:
        raise StepError(f"no validated data in {folder}: run collect and validate first")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def row_rules(params: FeaturizeParams) -> RowRules:
    return RowRules(
        delay_minutes=params.delay_minutes,
        history_gap_minutes=params.history_gap_minutes,
        recent_minutes=params.recent_minutes,
        plane_legs_back=params.plane_legs_back,
    )


def run(params: FeaturizeParams, paths: Paths) -> dict[str, int]:
    rows = build_rows(
        read_source(paths.validated / "flights"),
        read_source(paths.validated / "weather"),
        read_source(paths.validated / "planes"),
        row_rules(params),
    )
    try:
        splits = split_by_days(rows, params.test_days, params.valid_days, params.train_max_days)
    except ValueError as exc:
        raise StepError(f"featurize: {exc}") from None
    encoders = Encoders.fit(splits["train"], min_count=params.min_category_count)
    staged = paths.features.with_name(".features.staging")
    shutil.rmtree(staged, ignore_errors=True)
    for name, frame in splits.items():
        write_parquet(staged / paths.split(name).name, frame)
    write_json(staged / paths.encoders.name, encoders.to_json())
    replace_dir(staged, paths.features)
    sizes = {name: len(frame) for name, frame in splits.items()}
    for name, frame in splits.items():
        log.info(
            "%s: %d rows, %s to %s, %.1f%% delayed", name, len(frame),
            frame["date"].min(), frame["date"].max(), 100 * frame[LABEL].mean(),
        )  # fmt: skip
    return sizes


def main(argv: list[str] | None = None) -> int:
    from tasks.core.entry import stage_main

    def work() -> None:
        paths = Paths.at()
        run(load_params(paths.params).featurize, paths)

    return stage_main("featurize", __doc__ or "", work, argv)


if __name__ == "__main__":
    # Run the importable module, not __main__, so log records read "tasks.featurize".
    from tasks import featurize

    raise SystemExit(featurize.main())
