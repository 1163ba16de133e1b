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
import hashlib
import io
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core import clock
from tasks.core.config import Params, Source, ValidateParams, load_params
from tasks.core.errors import StepError
from tasks.core.io import read_json, replace_dir, write_json, write_parquet
from tasks.core.paths import Paths
from tasks.data.checks import Checked, check_columns, check_files, check_frame
from tasks.data.schemas import SCHEMAS, References, Schema, to_pandera

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


def reference_first(sources: dict[str, Source]) -> list[str]:
    """Sources ordered so that those others check against come first."""
    needed = {ref for s in sources.values() for ref in _schema_of(s, References()).needs}
    return sorted(sources, key=lambda name: (name not in needed, name))


def _schema_of(source: Source, refs: References) -> Schema:
    return SCHEMAS[source.schema_name](refs)


# --- I/O ----------------------------------------------------------------------------------


def validate_source(
    name: str,
    source: Source,
    refs: References,
    paths: Paths,
    staged: Paths,
    cfg: ValidateParams,
    now: dt.datetime,
    collected: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Validate every raw partition of one source into the staging folders.

    `collected`: the source's manifest entry; its partitions are validated, each checked
    first against the SHA-256 collect recorded. Returns the source's report entry, and
    its valid rows when it is a snapshot (reference data later sources are checked against).
    """
    schema = _schema_of(source, refs)
    check_files(name, schema, collected.get("files_seen", {}))
    missing = [ref for ref in schema.needs if not (staged.validated / ref).exists()]
    if missing:
        raise StepError(
            f"{name}: its checks need the source(s) {', '.join(missing)}, not collected"
        )
    checks = to_pandera(schema, source.key)
    skew = dt.timedelta(hours=cfg.max_clock_skew_hours)
    recorded = collected.get("partitions", {})
    partitions = [paths.raw / name / part for part in sorted(recorded)]
    (staged.validated / name).mkdir(parents=True, exist_ok=True)
    rows_in = rows_out = 0
    reasons: Counter[str] = Counter()
    valid = pd.DataFrame()
    for batch in _batches(partitions, {p: e["rows"] for p, e in recorded.items()}, cfg.batch_rows):
        frames = [read_verified(p, recorded[p.name]["sha256"]) for p in batch]
        for part, frame in zip(batch, frames, strict=True):
            check_columns(name, schema, frame, where=part.name)
        raw = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        checked = check_frame(raw, schema, source.key, now, skew, checks)
        write_by_partition(checked, batch, [len(f) for f in frames], staged, name)
        rows_in += len(raw)
        rows_out += len(checked.valid)
        reasons += checked.reasons
        valid = checked.valid
    entry = report_entry(name, rows_in, rows_out, len(partitions), reasons, cfg.max_reject_rate)
    return entry, (valid if source.partition_by is None else None)


def write_by_partition(
    checked: Checked, batch: list[Path], sizes: list[int], staged: Paths, name: str
) -> None:
    """A checked batch split back into its partitions, in the order of the input rows."""
    part_of = np.repeat(np.arange(len(batch)), sizes)
    for i, part in enumerate(batch):
        valid = checked.valid[part_of[~checked.rejected] == i]
        write_parquet(staged.validated / name / part.name, valid)
        bad = checked.quarantined[part_of[checked.rejected] == i]
        if len(bad):
            write_parquet(staged.quarantine / name / part.name, bad.reset_index(drop=True))


def report_entry(
    name: str, rows_in: int, rows_out: int, partitions: int, reasons: Counter[str],
    max_reject_rate: float,
) -> dict[str, Any]:  # fmt: skip
    """One source's line of reports/validation.json; a StepError past the reject rate."""
    quarantined = rows_in - rows_out
    rate = quarantined / rows_in if rows_in else 0.0
    if rate > max_reject_rate:
        top = ", ".join(f"{r} ({n})" for r, n in reasons.most_common(3))
        raise StepError(
            f"{name}: {rate:.2%} of {rows_in} rows rejected, above validate.max_reject_rate "
            f"= {max_reject_rate:.2%}; top reasons: {top}"
        )
    log.info("%s: %d rows in, %d valid, %d quarantined", name, rows_in, rows_out, quarantined)
    return {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "quarantined": quarantined,
        "reject_rate": round(rate, 6),
        "partitions": partitions,
        "reasons": dict(sorted(reasons.items())),
    }


def read_verified(path: Path, sha256: str) -> pd.DataFrame:
    """A raw partition, after checking that it is what collect recorded; a clear error
    naming it, and how to repair it, when it is missing or altered."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StepError(
            f"{path} is missing (the manifest lists it): run collect, which restores it from "
            "the DVC cache or the source (`dvc repro collect`, or `plumber run`)"
        ) from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StepError(
            f"{path} was altered since collect wrote it (its SHA-256 differs from the "
            "manifest's): run collect, which restores it from the DVC cache or the source"
        )
    return pd.read_parquet(io.BytesIO(data))


def _batches(partitions: list[Path], rows_of: dict[str, int], max_rows: int) -> list[list[Path]]:
    """Whole partitions grouped so a batch holds about max_rows rows (at least one partition)."""
    batches: list[list[Path]] = []
    current: list[Path] = []
    size = 0
    for part in partitions:
        rows = rows_of[part.name]
        if current and size + rows > max_rows:
            batches.append(current)
            current, size = [], 0
        current.append(part)
        size += rows
    if current:
        batches.append(current)
    return batches


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
        for name in reference_first(sources):
            if name not in collected:
                raise StepError(f"{name}: not collected yet (no entry in {paths.manifest}): "
                                "run the collect stage first")  # fmt: skip
            refs = reference_codes(references, cfg.extra_airport_codes)
            report[name], snapshot = validate_source(
                name, sources[name], refs, paths, staged, cfg, now, collected[name]
            )
            if snapshot is not None:
                references[name] = snapshot
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
