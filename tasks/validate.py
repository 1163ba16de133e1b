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
import itertools
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core import clock, compute
from tasks.core.batching import in_batches
from tasks.core.compute import Mapper
from tasks.core.config import Params, Source, ValidateParams, load_params
from tasks.core.errors import StepError
from tasks.core.io import (
    code_digest,
    fingerprint,
    link_or_copy,
    read_json,
    replace_dir,
    write_bytes,
    write_json,
)  # fmt: skip
from tasks.core.paths import Paths
from tasks.data import batch as batch_module
from tasks.data import checks as checks_module
from tasks.data import keys as keys_module
from tasks.data import ledger
from tasks.data import schemas as schemas_module
from tasks.data.batch import CheckJob, PartitionOutputs, check_batch
from tasks.data.checks import (
    check_files,
)  # fmt: skip
from tasks.data.keys import NO_KEYS, shared_keys
from tasks.data.ledger import Ledger, as_hex
from tasks.data.schemas import SCHEMAS, References, Schema

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
    run: Mapper[CheckJob, list[PartitionOutputs]],
) -> dict[str, Any]:
    """Validate one source's raw partitions into the staging folders; returns its report
    entry.

    `collected`: the source's manifest entry, whose SHA-256 of each partition is checked
    before it is read. Only partitions that are new or changed since the last run (or
    whose keys now meet another partition's) are checked; the rest are reused (ledger).
    """
    schema = _schema_of(source, refs)
    check_files(name, schema, collected.get("files_seen", {}))
    missing = [ref for ref in schema.needs if not (staged.validated / ref).exists()]
    if missing:
        raise StepError(
            f"{name}: its checks need the source(s) {', '.join(missing)}, not collected"
        )
    recorded: dict[str, dict[str, Any]] = collected.get("partitions", {})
    checks = checks_fingerprint(source, schema, refs, cfg)
    checker = PartitionChecker(name, source, refs, paths, staged, cfg, now, recorded, checks, run)
    previous = Ledger.read(paths.validated / name, checks)
    reused = [p for p in sorted(recorded)
              if previous.reusable(p, recorded[p]["sha256"], paths.validated / name)]  # fmt: skip
    for part in reused:
        checker.reuse(part, previous.partitions[part])
    checker.check([p for p in sorted(recorded) if p not in set(reused)], shared={})
    # Keys that now meet across partitions: every partition whose shared keys differ
    # from those it was checked with is checked again (usually none). A key two
    # partitions share is a key of one checked now, or one two reused ones already shared:
    # only those are looked for in the reused partitions' indexes, read one at a time.
    known = [ledger.from_hex(previous.partitions[p].shared) for p in reused]
    candidates = np.unique(np.concatenate([*checker.indexes.values(), *known, NO_KEYS]))
    indexes = itertools.chain(
        checker.indexes.items(), ((p, ledger.read_keys(checker.out, p)) for p in reused)
    )
    shared = shared_keys(indexes, candidates)
    again = [p for p in sorted(shared) if as_hex(shared[p]) != checker.ledger.partitions[p].shared]
    checker.check(again, shared)
    checker.ledger.write(checker.out)
    if reused:
        log.info("%s: %d of %d partitions checked, %d reused", name,
                 len(recorded) - len(reused), len(recorded), len(reused))  # fmt: skip
    rows_in, rows_out, reasons = checker.ledger.totals()
    return report_entry(name, rows_in, rows_out, len(recorded), reasons, cfg.max_reject_rate)


# The modules whose checks decide what is valid: an edit to any re-checks everything.
CHECK_CODE = tuple(Path(m.__file__ or "") for m in (checks_module, schemas_module, keys_module,
                                                   batch_module))  # fmt: skip


def checks_fingerprint(
    source: Source, schema: Schema, refs: References, cfg: ValidateParams
) -> str:
    """What decides a partition's result besides its bytes and the keys it shares: the
    checks' code, the source's schema and key, validate's params and the reference codes
    this schema checks against (a changed reference file re-checks what uses it)."""
    codes = {need: sorted(_codes_of(refs, need)) for need in schema.needs}
    params = cfg.model_dump(exclude={"batch_rows", "max_reject_rate"})
    return fingerprint(code=code_digest(*CHECK_CODE), schema=source.schema_name,
                       key=source.key, params=params, references=codes)  # fmt: skip


def _codes_of(refs: References, source: str) -> frozenset[str]:
    return {"airports": refs.airports, "airlines": refs.carriers}[source]


class PartitionChecker:
    """Checks partitions of one source in batches (wherever `compute` sends them) into
    the staging folders, keeping the ledger and the key index of every partition it
    checked or reused."""

    def __init__(
        self, name: str, source: Source, refs: References, paths: Paths, staged: Paths,
        cfg: ValidateParams, now: dt.datetime, recorded: dict[str, dict[str, Any]],
        checks: str, run: Mapper[CheckJob, list[PartitionOutputs]],
    ) -> None:  # fmt: skip
        self.name, self.source, self.refs, self.paths, self.cfg = name, source, refs, paths, cfg
        self.now, self.recorded, self.run = now, recorded, run
        self.out = staged.validated / name
        self.quarantine = staged.quarantine / name
        self.out.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(checks)
        self.indexes: dict[str, np.ndarray] = {}  # of the partitions checked this run

    def reuse(self, part: str, entry: ledger.Checked) -> None:
        """The previous run's outputs of `part`, linked into the staging folders."""
        before = self.paths.validated / self.name
        link_or_copy(before / part, self.out / part)
        link_or_copy(ledger.key_file(before, part), ledger.key_file(self.out, part))
        bad = self.paths.quarantine / self.name / part
        if bad.exists():
            link_or_copy(bad, self.quarantine / part)
        self.ledger.partitions[part] = entry

    def check(self, parts: list[str], shared: dict[str, np.ndarray]) -> None:
        batches = in_batches({p: self.recorded[p]["rows"] for p in parts}, self.cfg.batch_rows)
        for outputs in self.run(check_batch, (self._job(b, shared) for b in batches)):
            for result in outputs:
                self._write(result)

    def _job(self, batch: list[str], shared: dict[str, np.ndarray]) -> CheckJob:
        """A batch's job: its raw bytes, each checked first against the manifest's SHA-256."""
        parts = []
        for part in batch:
            sha256 = self.recorded[part]["sha256"]
            parts.append((part, sha256, verified_bytes(self.paths.raw / self.name / part, sha256)))
        return CheckJob(self.name, self.source, self.refs, self.now,
                        self.cfg.max_clock_skew_hours, parts,
                        {p: shared[p] for p in batch if p in shared})  # fmt: skip

    def _write(self, result: PartitionOutputs) -> None:
        write_bytes(self.out / result.part, result.valid)
        bad = self.quarantine / result.part
        if result.quarantined is not None:
            write_bytes(bad, result.quarantined)
        else:
            bad.unlink(missing_ok=True)  # a reused partition's rows that now pass
        write_bytes(ledger.key_file(self.out, result.part), result.keys)
        self.indexes[result.part] = np.load(io.BytesIO(result.keys), allow_pickle=False)
        self.ledger.partitions[result.part] = result.entry


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


def read_snapshot(folder: Path) -> pd.DataFrame:
    parts = sorted(folder.glob("*.parquet"))
    return (
        pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        if parts
        else pd.DataFrame()
    )


def verified_bytes(path: Path, sha256: str) -> bytes:
    """A raw partition's bytes, after checking that they are what collect recorded; a
    clear error naming it, and how to repair it, when it is missing or altered."""
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
    return data


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
            for name in reference_first(sources):
                if name not in collected:
                    raise StepError(f"{name}: not collected yet (no entry in {paths.manifest}):"
                                    " run the collect stage first")  # fmt: skip
                refs = reference_codes(references, cfg.extra_airport_codes)
                report[name] = validate_source(
                    name, sources[name], refs, paths, staged, cfg, now, collected[name], run_jobs
                )
                if sources[name].partition_by is None:  # a snapshot: others check against it
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
