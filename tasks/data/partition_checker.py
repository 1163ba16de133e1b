"""Validate's work on one source: which raw partitions are reused and which checked (and
checked again when the keys they share changed), their bytes verified against collect's
record, the results written to staging, and the source's line of the report."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.batching import in_batches
from tasks.core.config import Source, ValidateParams
from tasks.core.errors import StepError
from tasks.core.io import (
    code_digest,
    fingerprint,
    link_or_copy,
    write_bytes,
)  # fmt: skip
from tasks.core.paths import Paths
from tasks.data import batch as batch_module
from tasks.data import checks as checks_module
from tasks.data import keys as keys_module
from tasks.data import ledger
from tasks.data import schemas as schemas_module
from tasks.data.batch import CheckJob, PartitionOutputs
from tasks.data.checks import (
    check_files,
)  # fmt: skip
from tasks.data.keys import NO_KEYS, distinct, shared_keys
from tasks.data.ledger import Ledger, as_hex
from tasks.data.schemas import References, Schema, schema_for

log = logging.getLogger(__name__)


def schema_of(source: Source, refs: References) -> Schema:
    return schema_for(source.schema_name, source.watermark, refs)


# The modules whose checks decide what is valid: an edit to any re-checks everything.
CHECK_CODE = tuple(Path(m.__file__ or "") for m in (checks_module, schemas_module, keys_module,
                                                   batch_module))  # fmt: skip


def checks_fingerprint(
    source: Source, schema: Schema, refs: References, cfg: ValidateParams
) -> str:
    """What decides a partition's result besides its bytes and the keys it shares: the
    checks' code, the source's schema, key and record time (its watermark), validate's
    params and the reference codes this schema checks against (a changed reference file
    re-checks what uses it)."""
    codes = {need: sorted(_codes_of(refs, need)) for need in schema.needs}
    params = cfg.model_dump(exclude={"batch_rows", "max_reject_rate"})
    return fingerprint(code=code_digest(*CHECK_CODE), schema=source.schema_name,
                       key=source.key, params=params, references=codes,
                       recorded_at=schema.recorded_at)  # fmt: skip


def _codes_of(refs: References, source: str) -> frozenset[str]:
    return {"airports": refs.airports, "airlines": refs.carriers}[source]


class PartitionChecker:
    """One source's partitions: which are reused and which checked (and checked again
    when the keys they share changed), into the staging folders, keeping the ledger and
    the key index of each.

    `collected`: the source's manifest entry, whose SHA-256 of each partition is checked
    before it is read. Only partitions that are new or changed since the last run (or
    whose keys now meet another partition's) are checked; the rest are reused (ledger).
    """

    def __init__(
        self, name: str, source: Source, refs: References, paths: Paths, staged: Paths,
        cfg: ValidateParams, now: dt.datetime, collected: dict[str, Any],
    ) -> None:  # fmt: skip
        self.name, self.source, self.refs, self.paths, self.cfg = name, source, refs, paths, cfg
        self.now = now
        schema = schema_of(source, refs)
        check_files(name, schema, collected.get("files_seen", {}))
        missing = [ref for ref in schema.needs if not (staged.validated / ref).exists()]
        if missing:
            raise StepError(
                f"{name}: its checks need the source(s) {', '.join(missing)}, not collected"
            )
        self.recorded: dict[str, dict[str, Any]] = collected.get("partitions", {})
        self.out = staged.validated / name
        self.quarantine = staged.quarantine / name
        self.out.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(checks_fingerprint(source, schema, refs, cfg))
        self.indexes: dict[str, np.ndarray] = {}  # of the partitions checked this run
        self.previous = Ledger.read(paths.validated / name, self.ledger.fingerprint)
        before = (paths.validated / name, paths.quarantine / name)
        sha256 = {p: entry["sha256"] for p, entry in self.recorded.items()}
        self.reused = [p for p in sorted(sha256) if self.previous.reusable(p, sha256[p], *before)]
        for part in self.reused:
            self._reuse(part, self.previous.partitions[part])
        self.todo = [p for p in sorted(self.recorded) if p not in set(self.reused)]

    def _reuse(self, part: str, entry: ledger.Checked) -> None:
        """The previous run's outputs of `part`, linked into the staging folders."""
        before = self.paths.validated / self.name
        link_or_copy(before / part, self.out / part)
        link_or_copy(ledger.key_file(before, part), ledger.key_file(self.out, part))
        bad = self.paths.quarantine / self.name / part
        if bad.exists():
            link_or_copy(bad, self.quarantine / part)
        self.ledger.partitions[part] = entry

    def sharing_again(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """The partitions to check again, since the keys they share with other partitions
        differ from those they were checked with (usually none), and those keys.

        A key two partitions share is a key of one checked now, or one two reused ones
        already shared: only those are looked for in the reused partitions' indexes,
        read one at a time."""
        known = [ledger.from_hex(self.previous.partitions[p].shared) for p in self.reused]
        candidates = distinct(np.concatenate([*self.indexes.values(), *known, NO_KEYS]))
        reused_indexes = ((p, ledger.read_keys(self.out, p)) for p in self.reused)
        shared = shared_keys(self.indexes, reused_indexes, candidates)
        again = [p for p in sorted(shared)
                 if as_hex(shared[p]) != self.ledger.partitions[p].shared]  # fmt: skip
        return again, shared

    def finish(self) -> dict[str, Any]:
        """The ledger written; the source's report entry."""
        self.ledger.write(self.out)
        if self.reused:
            log.info("%s: %d of %d partitions checked, %d reused", self.name,
                     len(self.recorded) - len(self.reused), len(self.recorded),
                     len(self.reused))  # fmt: skip
        rows_in, rows_out, reasons = self.ledger.totals()
        return report_entry(self.name, rows_in, rows_out, len(self.recorded), reasons,
                            self.cfg.max_reject_rate)  # fmt: skip

    def jobs(self, parts: list[str], shared: dict[str, np.ndarray]) -> Iterator[CheckJob]:
        """`parts` in batches of about validate.batch_rows rows, one job each."""
        for batch in in_batches({p: self.recorded[p]["rows"] for p in parts},
                                self.cfg.batch_rows):  # fmt: skip
            yield self._job(batch, shared)

    def _job(self, batch: list[str], shared: dict[str, np.ndarray]) -> CheckJob:
        """A batch's job: its raw bytes, each checked first against the manifest's SHA-256."""
        parts = []
        for part in batch:
            sha256 = self.recorded[part]["sha256"]
            parts.append((part, sha256, verified_bytes(self.paths.raw / self.name / part, sha256)))
        return CheckJob(self.name, self.source, self.refs, self.now,
                        self.cfg.max_clock_skew_hours, parts,
                        {p: shared[p] for p in batch if p in shared})  # fmt: skip

    def write(self, result: PartitionOutputs) -> None:
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
