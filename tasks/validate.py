"""Validate: typed, checked rows to data/validated/, the rest to data/quarantine/ with reasons.

Every raw partition is parsed to its schema's types and checked lazily, so all the
failures of a row are found in one pass. Each source fails the stage when its columns
changed (the message names the column) or when its share of rejected rows exceeds
``validate.max_reject_rate``. Outputs are built in a staging folder and swapped in only
when every source passed, so a failed run leaves the previous version in place.

    data/validated/<source>/<partition>.parquet    typed rows that passed
    data/quarantine/<source>/<partition>.parquet   raw rows that failed, with `_reasons`
    reports/validation.json                        rows in, out, quarantined, per reason
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from tasks.core import clock, compute
from tasks.core.compute import Mapper
from tasks.core.config import Params, Source, ValidateParams, load_params
from tasks.core.errors import StepError
from tasks.core.io import (
    read_json,
    replace_dir,
    write_json,
)  # fmt: skip
from tasks.core.paths import Paths
from tasks.data.batch import CheckJob, PartitionOutputs, check_batch
from tasks.data.partition_checker import PartitionChecker, read_snapshot, schema_of
from tasks.data.schemas import References

log = logging.getLogger(__name__)


def reference_codes(validated: dict[str, pd.DataFrame], extra_airports: list[str]) -> References:
    airports = validated.get("airports")
    airlines = validated.get("airlines")
    return References(
        airports=frozenset(airports["faa"].dropna()) | frozenset(extra_airports)
        if airports is not None
        else frozenset(),
        carriers=frozenset(airlines["carrier"].dropna()) if airlines is not None else frozenset(),
    )


def in_waves(sources: dict[str, Source]) -> list[list[str]]:
    """The order sources are validated in: each source others check against alone, first
    (in name order); then all the others together, their batches checked side by side."""
    needed = checked_against(sources)
    others = sorted(name for name in sources if name not in needed)
    return [[name] for name in sorted(needed)] + ([others] if others else [])


def checked_against(sources: dict[str, Source]) -> set[str]:
    """The sources whose rows others are checked against (airports, airlines)."""
    needs = {ref for s in sources.values() for ref in schema_of(s, References()).needs}
    return needs & sources.keys()


# --- I/O ----------------------------------------------------------------------------------


def validate_sources(
    names: list[str], sources: dict[str, Source], refs: References, paths: Paths, staged: Paths,
    cfg: ValidateParams, now: dt.datetime, collected: dict[str, Any],
    run: Mapper[CheckJob, list[PartitionOutputs]],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Validate these sources' raw partitions into the staging folders, their batches in
    one stream (so no worker waits for one source to finish); their report entries."""
    checkers = []
    for name in names:
        if name not in collected:
            raise StepError(f"{name}: not collected yet (no entry in {paths.manifest}):"
                            " run the collect stage first")  # fmt: skip
        checkers.append(PartitionChecker(name, sources[name], refs, paths, staged, cfg, now,
                                         collected[name]))  # fmt: skip
    check_together([(c, c.todo, {}) for c in checkers], run)
    check_together([(c, *c.sharing_again()) for c in checkers], run)
    return {c.name: c.finish() for c in checkers}


def check_together(
    work: list[tuple[PartitionChecker, list[str], dict[str, np.ndarray]]],
    run: Mapper[CheckJob, list[PartitionOutputs]],
) -> None:
    """Each checker's partitions (with the keys they share) checked in one stream of
    batches; each result written by the checker whose job it was."""
    owners: deque[PartitionChecker] = deque()

    def jobs() -> Iterator[CheckJob]:
        for checker, parts, shared in work:
            for job in checker.jobs(parts, shared):
                owners.append(checker)  # results come back in job order
                yield job

    for outputs in run(check_batch, jobs()):
        checker = owners.popleft()
        for result in outputs:
            checker.write(result)


def run(params: Params, paths: Paths, now: dt.datetime | None = None) -> dict[str, Any]:
    """Validate every enabled source; swap the outputs into place only if all passed."""
    now = now or clock.now()
    cfg = params.validate_
    sources = params.collect.enabled_sources()
    staging_root = paths.root / "data" / ".validate.staging"
    shutil.rmtree(staging_root, ignore_errors=True)
    staged = Paths(staging_root)  # staged.validated / staged.quarantine mirror data/
    staged.validated.mkdir(parents=True)
    staged.quarantine.mkdir(parents=True)
    report: dict[str, Any] = {}
    references: dict[str, pd.DataFrame] = {}
    collected = read_json(paths.manifest, default={}).get("sources", {})
    try:
        with compute.mapper(params.compute) as run_jobs:
            for wave in in_waves(sources):
                refs = reference_codes(references, cfg.extra_airport_codes)
                report.update(validate_sources(wave, sources, refs, paths, staged, cfg, now,
                                               collected, run_jobs))  # fmt: skip
                for name in checked_against(sources) & set(wave):
                    references[name] = read_snapshot(staged.validated / name)
        replace_dir(staged.validated, paths.validated)
        replace_dir(staged.quarantine, paths.quarantine)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    totals = {k: sum(e[k] for e in report.values()) for k in ("rows_in", "rows_out", "quarantined")}
    write_json(paths.validation_report, {"sources": report, "total": totals})
    return report


def main(argv: list[str] | None = None) -> int:
    from tasks.core.entry import stage_main

    def work() -> None:
        paths = Paths.at()
        run(load_params(paths.params), paths)

    return stage_main("validate", __doc__ or "", work, argv)


if __name__ == "__main__":
    # Run the importable module, not __main__, so log records read "tasks.validate".
    from tasks import validate

    raise SystemExit(validate.main())
