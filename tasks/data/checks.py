"""The checks of one source's rows: pure functions of frames and schemas.

Raw rows are parsed to their schema's types and checked lazily (pandera), so all the
failures of a row are found in one pass; each failure becomes a reason that names the
column and the check. Column changes and unreadable files name what changed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from tasks.core.errors import StepError
from tasks.data.keys import NO_KEYS, key_hashes, repeated
from tasks.data.partitions import INVALID, META_PREFIX
from tasks.data.schemas import PANDAS_DTYPES, Schema, to_pandera

REASONS = "_reasons"
IN_THE_FUTURE = "in the future"  # a row recorded after now: may pass in a later run
PARSE_ERRORS = {"int": "not an integer", "float": "not a number", "timestamp": "not a timestamp"}
PANDERA_NAMES = {"not_nullable": "missing value"}


@dataclass(frozen=True)
class Checked:
    valid: pd.DataFrame  # typed
    row_reasons: list[str]  # per rejected row, in order: its reasons, "; "-joined
    reasons: Counter[str]
    rejected: np.ndarray  # per input row, in order: True if quarantined
    key_hashes: np.ndarray  # per input row: the hash of its typed key
    keyed: np.ndarray  # per input row: False when a key column is null


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
    now: dt.datetime,
    skew: dt.timedelta,
) -> dict[int, list[str]]:
    """Per row, every check it fails (pandera, lazily, plus the time checks); keys are
    checked apart (tasks/data/keys.py), across partitions."""
    failures: dict[int, list[str]] = {}
    try:
        checks.validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.dropna(subset=["index"])
        for row, column, check in cases[["index", "column", "check"]].itertuples(index=False):
            failures.setdefault(int(row), []).append(f"{column}: {PANDERA_NAMES.get(check, check)}")
    if schema.recorded_at:
        recorded = typed[schema.recorded_at]
        for row in typed.index[recorded > pd.Timestamp(now) + skew]:
            failures.setdefault(row, []).append(f"{schema.recorded_at}: {IN_THE_FUTURE}")
        if schema.happened_at:
            late = typed[schema.happened_at] > recorded
            for row in typed.index[late.fillna(False)]:
                failures.setdefault(row, []).append(
                    f"{schema.happened_at}: after {schema.recorded_at}"
                )
    return failures


def check_frame(
    raw: pd.DataFrame,
    schema: Schema,
    key: list[str],
    now: dt.datetime,
    skew: dt.timedelta,
    checks: pa.DataFrameSchema | None = None,
    part_of: np.ndarray | None = None,
    shared: np.ndarray = NO_KEYS,
) -> Checked:
    """Every failure of every row of `raw`. `part_of`: the partition of each row (rows of
    several partitions are checked at once); a key repeated within a partition, or one of
    `shared` (keys other partitions hold too), is a duplicate."""
    raw = raw.reset_index(drop=True)
    if checks is None:
        checks = to_pandera(schema)
    typed, parse_failures = parse(raw, schema)
    reasons = dict(parse_failures)
    for row, found in find_failures(typed, schema, checks, now, skew).items():
        unparsed = {r.split(":")[0] for r in parse_failures.get(row, [])}
        # A cell that did not parse is also null to pandera: say it once.
        extra = [r for r in found if r.split(":")[0] not in unparsed]
        reasons[row] = sorted(set(reasons.get(row, []) + extra))
    hashes, keyed = key_hashes(typed, key)
    groups = np.zeros(len(raw), dtype=np.int64) if part_of is None else part_of
    duplicate = f"duplicate key ({', '.join(key)})"
    for at in np.flatnonzero(repeated(hashes, keyed, groups, shared)).tolist():
        reasons[at] = sorted({*reasons.get(at, []), duplicate})
    bad = raw.index.isin(list(reasons))
    row_reasons = ["; ".join(sorted(reasons[i])) for i in raw.index[bad]]
    counts: Counter[str] = Counter(r for i in raw.index[bad] for r in reasons[i])
    valid = typed[~bad][list(schema.fields)].reset_index(drop=True)
    return Checked(valid, row_reasons, counts, bad, hashes, keyed)
