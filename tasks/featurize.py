"""Featurize: validated flights + origin weather + planes -> feature rows, one file per day.

    data/features/days/<date>.parquet   the day's joined rows (date, INPUT) and the label
    data/features/days/<date>.json      what it was built from, and its statistics
    data/features/windows.json          the days of train, valid and test
    data/features/encoders.json         vocabularies and scalers, fitted on train only

A day's rows depend only on that day's flights and weather, the planes and the rules
(the history features are same-day), so only days whose inputs changed are built; the
others are reused as they are. The split is temporal: test is the newest `test_days`
days, valid the `valid_days` before them, train the rest (optionally only the newest
`train_max_days`); the encoders are refitted from the train days' statistics alone.
The layout: tasks/ml/feature_store.py.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core import compute
from tasks.core.batching import in_batches
from tasks.core.compute import Mapper
from tasks.core.config import ComputeParams, FeaturizeParams, load_params
from tasks.core.errors import StepError
from tasks.core.io import (
    code_digest,
    fingerprint,
    json_bytes,
    link_or_copy,
    parquet_bytes,
    replace_dir,
    sha256_file,
    write_bytes,
    write_json,
)  # fmt: skip
from tasks.core.paths import Paths
from tasks.ml import columns as columns_module
from tasks.ml import feature_store as store
from tasks.ml import features as features_module
from tasks.ml.columns import WEATHER
from tasks.ml.encoders import Encoders
from tasks.ml.features import RowRules, build_rows, day_stats

log = logging.getLogger(__name__)

# The modules that decide a day's rows: an edit to any rebuilds every day.
FEATURE_CODE = (Path(features_module.__file__), Path(columns_module.__file__), Path(store.__file__))


def row_rules(params: FeaturizeParams) -> RowRules:
    return RowRules(
        delay_minutes=params.delay_minutes,
        history_gap_minutes=params.history_gap_minutes,
        recent_minutes=params.recent_minutes,
        plane_legs_back=params.plane_legs_back,
    )


def day_files(folder: Path) -> dict[str, Path]:
    """The day partitions of a validated source (`<YYYY-MM-DD>.parquet`)."""
    return {p.stem: p for p in sorted(folder.glob("*.parquet")) if p.stem[:4].isdigit()}


def read_days(files: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    frames = [pd.read_parquet(p, columns=columns) for p in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def day_inputs(base: str, flights: Path, weather: Path | None) -> str:
    """What a day's rows are built from: the rules, code and planes (`base`) and the
    SHA-256 of the day's validated flights and weather."""
    return fingerprint(base=base, flights=sha256_file(flights),
                       weather=sha256_file(weather) if weather else None)  # fmt: skip


def run(params: FeaturizeParams, paths: Paths, compute_cfg: ComputeParams) -> dict[str, int]:
    """Build the days whose inputs changed (wherever `compute_cfg` says; in this process
    by default), then the windows and the encoders from every day's statistics."""
    flights = day_files(paths.validated / "flights")
    weather = day_files(paths.validated / "weather")
    planes = sorted((paths.validated / "planes").glob("*.parquet"))
    if not flights or not planes:
        missing = "flights" if not flights else "planes"
        raise StepError(
            f"no validated data in {paths.validated / missing}: run collect and validate first"
        )
    rules = row_rules(params)
    base = fingerprint(code=code_digest(*FEATURE_CODE), rules=asdict(rules),
                       planes=[sha256_file(p) for p in planes])  # fmt: skip
    inputs = {day: day_inputs(base, flights[day], weather.get(day)) for day in flights}

    staged = paths.features.with_name(".features.staging")
    shutil.rmtree(staged, ignore_errors=True)
    store.days_folder(staged).mkdir(parents=True)
    todo = [day for day in flights if not reuse(paths.features, staged, day, inputs[day])]
    if todo:
        with compute.mapper(compute_cfg) as run_jobs:
            build(
                todo, flights, weather, planes, rules, inputs, staged, params.batch_rows, run_jobs
            )
    if len(todo) < len(flights):
        log.info(
            "%d of %d days built, %d reused", len(todo), len(flights), len(flights) - len(todo)
        )
    stats = {day: store.read_day_stats(staged, day) for day in flights}
    with_rows = [day for day, s in stats.items() if s.rows]
    try:
        windows = store.choose_windows(
            with_rows, params.test_days, params.valid_days, params.train_max_days
        )
    except ValueError as exc:
        raise StepError(f"featurize: {exc}") from None
    encoders = Encoders.from_stats([stats[d] for d in windows["train"]], params.min_category_count)
    write_json(store.windows_file(staged), windows)
    write_json(staged / paths.encoders.name, encoders.to_json())
    replace_dir(staged, paths.features)
    sizes = {}
    for name, days in windows.items():
        rows = sum(stats[d].rows for d in days)
        positives = sum(stats[d].positives for d in days)
        sizes[name] = rows
        log.info("%s: %d rows, %s to %s, %.1f%% delayed", name, rows, days[0], days[-1],
                 100 * positives / rows if rows else 0.0)  # fmt: skip
    return sizes


def reuse(features: Path, staged: Path, day: str, inputs: str) -> bool:
    """Link the day's files of the previous run into `staged` if they were built from
    the same inputs and the rows file is still the one written (its SHA-256 is in the
    day's record): a damaged record or rows file means the day is built again."""
    rows, record = store.day_rows_file(features, day), store.day_stats_file(features, day)
    if not record.exists() or not rows.exists():
        return False
    try:
        built = store.read_day_record(features, day)
    except ValueError:
        log.warning("%s is damaged: the day is built again", record)
        return False
    if built["inputs"] != inputs:
        return False
    if sha256_file(rows) != built.get("rows_sha256"):
        log.warning("%s is not the file featurize wrote: the day is built again", rows)
        return False
    link_or_copy(rows, store.day_rows_file(staged, day))
    link_or_copy(record, store.day_stats_file(staged, day))
    return True


@dataclass(frozen=True)
class BuildJob:
    """Days to build, with everything they are built from, as bytes: a pure job that
    gives the same result in this process or on a Dask worker elsewhere."""

    days: list[tuple[str, str, bytes, bytes | None]]  # (day, inputs, flights, weather)
    planes: bytes
    rules: RowRules


def build_days(job: BuildJob) -> list[tuple[str, bytes, bytes]]:
    """Each day's rows (Parquet) and its record (JSON: inputs and statistics).

    The days are built in one pass, then cut by day: a day's rows are what they would be
    built alone, since every feature is same-day. A flight dated other than its partition
    (possible only in bad data) could meet another day's flights in one pass, so such a
    batch is built day by day instead."""
    planes = pd.read_parquet(io.BytesIO(job.planes))
    flights = [pd.read_parquet(io.BytesIO(f)) for _, _, f, _ in job.days]
    weather = [_frame(w) for _, _, _, w in job.days]
    day_of = np.repeat([day for day, _, _, _ in job.days], [len(f) for f in flights])
    rows = build_rows(_concat(flights), _concat(weather), planes, job.rules)
    if (rows["date"].to_numpy(dtype=object) != day_of).any():
        alone = [
            build_rows(f, _concat([w]), planes, job.rules)
            for f, w in zip(flights, weather, strict=True)
        ]
        return [
            (day, *day_outputs(r, inputs))
            for (day, inputs, _, _), r in zip(job.days, alone, strict=True)
        ]
    return [
        (day, *day_outputs(rows[day_of == day].reset_index(drop=True), inputs))
        for day, inputs, _, _ in job.days
    ]


def _frame(data: bytes | None) -> pd.DataFrame | None:
    return None if data is None else pd.read_parquet(io.BytesIO(data))


def _concat(frames: list[pd.DataFrame | None]) -> pd.DataFrame:
    """Weather frames one after the other; none (days without weather): no rows, the
    columns the join needs."""
    present = [f for f in frames if f is not None]
    if not present:
        return pd.DataFrame(columns=["origin", "time_hour", *WEATHER])
    return pd.concat(present, ignore_index=True) if len(present) > 1 else present[0]


def day_outputs(rows: pd.DataFrame, inputs: str) -> tuple[bytes, bytes]:
    """A day's two files: its rows, and its record (what it was built from, statistics)."""
    data = parquet_bytes(rows)
    record = {"inputs": inputs, "rows_sha256": hashlib.sha256(data).hexdigest(),
              "stats": day_stats(rows).to_json()}  # fmt: skip
    return data, json_bytes(record)


def write_day(features: Path, day: str, rows: bytes, record: bytes) -> None:
    write_bytes(store.day_rows_file(features, day), rows)
    write_bytes(store.day_stats_file(features, day), record)


def build(
    days: list[str], flights: dict[str, Path], weather: dict[str, Path], planes: list[Path],
    rules: RowRules, inputs: dict[str, str], staged: Path, batch_rows: int, run: Mapper,
) -> None:  # fmt: skip
    """The rows and statistics of `days`, in jobs of about `batch_rows` flights."""
    import pyarrow.parquet as pq

    planes_bytes = parquet_bytes(read_days(planes))
    sizes = {day: pq.ParquetFile(flights[day]).metadata.num_rows for day in days}

    def job(batch: list[str]) -> BuildJob:
        return BuildJob(
            [(d, inputs[d], flights[d].read_bytes(),
              weather[d].read_bytes() if d in weather else None) for d in batch],
            planes_bytes, rules,
        )  # fmt: skip

    for built in run(build_days, (job(b) for b in in_batches(sizes, batch_rows))):
        for day, rows, record in built:
            write_day(staged, day, rows, record)


def main(argv: list[str] | None = None) -> int:
    from tasks.core.entry import stage_main

    def work() -> None:
        paths = Paths.at()
        params = load_params(paths.params)
        run(params.featurize, paths, params.compute)

    return stage_main("featurize", __doc__ or "", work, argv)


if __name__ == "__main__":
    # Run the importable module, not __main__, so log records read "tasks.featurize".
    from tasks import featurize

    raise SystemExit(featurize.main())
