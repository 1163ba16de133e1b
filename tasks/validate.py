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
import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from tasks.core.config import Params, Source, ValidateParams, load_params
from tasks.core.errors import StepError
from tasks.core.io import read_json, replace_dir, write_json, write_parquet
from tasks.core.paths import Paths
from tasks.data.partitions import INVALID, META_PREFIX
from tasks.data.schemas import PANDAS_DTYPES, SCHEMAS, References, Schema, to_pandera

log = logging.getLogger(__name__)

REASONS = "_reasons"
PARSE_ERRORS = {"int": "not an integer", "float": "not a number", "timestamp": "not a timestamp"}
PANDERA_NAMES = {"not_nullable": "missing value", "multiple_fields_uniqueness": "duplicate key"}


@dataclass(frozen=True)
class Checked:
    valid: pd.DataFrame  # typed
    quarantined: pd.DataFrame  # raw values plus REASONS
    reasons: Counter[str]
    rejected: np.ndarray  # per input row, in order: True if quarantined


# --- pure steps ---------------------------------------------------------------------------


def column_changes(schema: Schema, columns: list[str]) -> str | None:
    """What differs between the schema's columns and `columns`, in words; None if nothing.
    Columns collect adds (META_PREFIX) are not the source's and do not count."""
    expected = set(schema.fields)
    found = {c for c in columns if not c.startswith(META_PREFIX)}
    missing, new = sorted(expected - found), sorted(found - expected)
    gone, added = ", ".join(map(repr, missing)), ", ".join(map(repr, new))
    if missing and new:
        return f"column(s) {gone} missing and {added} new (renamed?)"
    if missing:
        return f"column(s) {gone} missing"
    return f"unexpected column(s) {added}" if new else None


def check_files(source: str, schema: Schema, files_seen: dict[str, dict[str, Any]]) -> None:
    """Fail, naming the files and their columns, when dropped files do not have the
    schema's columns (what collect recorded of each file in the manifest)."""
    changed = {
        name: change
        for name, info in sorted(files_seen.items())
        if "columns" in info and (change := column_changes(schema, info["columns"]))
    }
    if changed:
        shown = [f"{name}: {change}" for name, change in list(changed.items())[:5]]
        more = f"; and {len(changed) - 5} more file(s)" if len(changed) > 5 else ""
        raise StepError(f"{source}: schema changed in {len(changed)} file(s): "
                        f"{'; '.join(shown)}{more}")  # fmt: skip


def check_columns(source: str, schema: Schema, frame: pd.DataFrame, where: str = "") -> None:
    """Fail, naming the column (and `where`: the partition), when a source's columns are
    not the schema's."""
    change = column_changes(schema, list(frame.columns))
    if change:
        raise StepError(f"{source}: schema changed{f' in {where}' if where else ''}: {change}")
    for name, spec in schema.fields.items():
        if not _compatible(spec.kind, frame[name]):
            raise StepError(
                f"{source}: schema changed: column {name!r} is now {frame[name].dtype}, "
                f"expected {spec.kind}"
            )


def _compatible(kind: str, values: pd.Series) -> bool:
    dtype = values.dtype
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return True  # text is parsed value by value; failures are quarantined per row
    if kind in ("int", "float") and not pd.api.types.is_bool_dtype(dtype):
        fits = pd.api.types.is_numeric_dtype(dtype)
    elif kind == "timestamp":
        fits = pd.api.types.is_datetime64_any_dtype(dtype)
    else:
        fits = False  # a number or a timestamp where text was expected
    return fits or bool(values.isna().all())  # a column of nulls fits any type


def parse(frame: pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Each field converted to its type; the cells that would not convert, per row."""
    typed: dict[str, pd.Series] = {}
    failures: dict[int, list[str]] = {}
    for name, spec in schema.fields.items():
        raw = frame[name]
        if spec.kind == "str":
            typed[name] = raw.astype(PANDAS_DTYPES["str"])
            continue
        if spec.kind == "timestamp":
            value = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
        else:
            value = pd.to_numeric(raw, errors="coerce")
            if spec.kind == "int":
                value = value.where(value.isna() | (value % 1 == 0))
        bad = raw.notna() & value.isna()
        for row in frame.index[bad]:
            failures.setdefault(row, []).append(f"{name}: {PARSE_ERRORS[spec.kind]}")
        typed[name] = value.astype(PANDAS_DTYPES[spec.kind])
    for row, cells in _invalid_cells(frame).items():
        for name in cells:  # the source had a value that did not fit the column's type
            kind = schema.fields[name].kind if name in schema.fields else "value"
            failures.setdefault(row, []).append(f"{name}: {PARSE_ERRORS.get(kind, 'invalid')}")
    return pd.DataFrame(typed, index=frame.index), failures


def _invalid_cells(frame: pd.DataFrame) -> dict[Any, dict[str, str]]:
    """Per row, the raw text of the values its source could not store in their type."""
    if INVALID not in frame.columns:
        return {}
    return {row: json.loads(text) for row, text in frame[INVALID].dropna().items()}


def find_failures(
    typed: pd.DataFrame,
    schema: Schema,
    checks: pa.DataFrameSchema,
    key: list[str],
    now: dt.datetime,
    skew: dt.timedelta,
) -> dict[int, list[str]]:
    """Per row, every check it fails (pandera, lazily, plus the time checks)."""
    failures: dict[int, list[str]] = {}
    try:
        checks.validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.dropna(subset=["index"])
        for row, column, check in cases[["index", "column", "check"]].itertuples(index=False):
            failures.setdefault(int(row), []).append(_reason(str(column), str(check), key))
    if schema.recorded_at:
        recorded = typed[schema.recorded_at]
        for row in typed.index[recorded > pd.Timestamp(now) + skew]:
            failures.setdefault(row, []).append(f"{schema.recorded_at}: in the future")
        if schema.happened_at:
            late = typed[schema.happened_at] > recorded
            for row in typed.index[late.fillna(False)]:
                failures.setdefault(row, []).append(
                    f"{schema.happened_at}: after {schema.recorded_at}"
                )
    return failures


def _reason(column: str, check: str, key: list[str]) -> str:
    if check == "multiple_fields_uniqueness":
        return f"duplicate key ({', '.join(key)})"
    return f"{column}: {PANDERA_NAMES.get(check, check)}"


def check_frame(
    raw: pd.DataFrame,
    schema: Schema,
    key: list[str],
    now: dt.datetime,
    skew: dt.timedelta,
    checks: pa.DataFrameSchema | None = None,
) -> Checked:
    raw = raw.reset_index(drop=True)
    if checks is None:
        checks = to_pandera(schema, key)
    typed, parse_failures = parse(raw, schema)
    reasons = dict(parse_failures)
    for row, found in find_failures(typed, schema, checks, key, now, skew).items():
        unparsed = {r.split(":")[0] for r in parse_failures.get(row, [])}
        # A cell that did not parse is also null to pandera: say it once.
        extra = [r for r in found if r.split(":")[0] not in unparsed or "duplicate" in r]
        reasons[row] = sorted(set(reasons.get(row, []) + extra))
    bad = raw.index.isin(list(reasons))
    quarantined = raw[bad].copy()
    quarantined[REASONS] = ["; ".join(sorted(reasons[i])) for i in quarantined.index]
    counts: Counter[str] = Counter(r for i in quarantined.index for r in reasons[i])
    valid = typed[~bad][list(schema.fields)].reset_index(drop=True)
    return Checked(valid, quarantined.reset_index(drop=True), counts, bad)


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
        # Split the batch back into its partitions, in the same order as the input rows.
        part_of = np.repeat(np.arange(len(batch)), [len(f) for f in frames])
        for i, part in enumerate(batch):
            write_parquet(
                staged.validated / name / part.name, checked.valid[part_of[~checked.rejected] == i]
            )
            bad = checked.quarantined[part_of[checked.rejected] == i]
            if len(bad):
                write_parquet(staged.quarantine / name / part.name, bad.reset_index(drop=True))
        rows_in += len(raw)
        rows_out += len(checked.valid)
        reasons += checked.reasons
        valid = checked.valid
    quarantined = rows_in - rows_out
    rate = quarantined / rows_in if rows_in else 0.0
    entry = {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "quarantined": quarantined,
        "reject_rate": round(rate, 6),
        "partitions": len(partitions),
        "reasons": dict(sorted(reasons.items())),
    }
    if rate > cfg.max_reject_rate:
        top = ", ".join(f"{r} ({n})" for r, n in reasons.most_common(3))
        raise StepError(
            f"{name}: {rate:.2%} of {rows_in} rows rejected, above validate.max_reject_rate "
            f"= {cfg.max_reject_rate:.2%}; top reasons: {top}"
        )
    log.info("%s: %d rows in, %d valid, %d quarantined", name, rows_in, rows_out, quarantined)
    return entry, (valid if source.partition_by is None else None)


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
    now = now or dt.datetime.now(dt.UTC)
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
