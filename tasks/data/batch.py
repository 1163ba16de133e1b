"""One batch of a source's partitions checked: a pure job, bytes in and bytes out.

Validate sends these jobs wherever `compute` says (tasks/core/compute.py); a job carries
everything its checks need, so the result is the same in this process or on a worker
elsewhere. Each partition's outputs are made from its own rows alone, so they do not
depend on which partitions shared its batch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks.core.config import Source
from tasks.core.io import parquet_bytes
from tasks.data.checks import IN_THE_FUTURE, REASONS, check_columns, check_frame
from tasks.data.keys import NO_KEYS, index_of
from tasks.data.ledger import KEYS_FILE, QUARANTINED, VALID, Checked, as_hex, keys_bytes
from tasks.data.schemas import References, schema_for, to_pandera


@dataclass(frozen=True)
class CheckJob:
    name: str
    source: Source
    refs: References
    now: dt.datetime
    skew_hours: float
    parts: list[tuple[str, str, bytes]]  # (partition, raw SHA-256, raw Parquet bytes)
    shared: dict[str, np.ndarray] = field(default_factory=dict)  # keys other partitions hold


@dataclass(frozen=True)
class PartitionOutputs:
    part: str
    valid: bytes  # Parquet of the typed rows that passed
    quarantined: bytes | None  # Parquet of the raw rows that failed, with REASONS; None: none
    keys: bytes  # the key index (.npy)
    entry: Checked  # the ledger's record


def check_batch(job: CheckJob) -> list[PartitionOutputs]:
    schema = schema_for(job.source.schema_name, job.source.watermark, job.refs)
    frames = [pd.read_parquet(io.BytesIO(data)) for _, _, data in job.parts]
    for (part, _, _), frame in zip(job.parts, frames, strict=True):
        check_columns(job.name, schema, frame, where=part)
    raw = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    part_of = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    shared = [job.shared.get(part, NO_KEYS) for part, _, _ in job.parts]
    checked = check_frame(raw, schema, job.source.key, job.now,
                          dt.timedelta(hours=job.skew_hours), to_pandera(schema), part_of,
                          np.concatenate(shared))  # fmt: skip
    reasons_of = np.asarray(checked.row_reasons, dtype=object)
    outputs = []
    for i, ((part, sha256, _), frame) in enumerate(zip(job.parts, frames, strict=True)):
        rows = part_of == i
        rejected = checked.rejected[rows]
        mine = list(reasons_of[rows[checked.rejected]])
        quarantined = (
            parquet_bytes(frame[rejected].reset_index(drop=True).assign(**{REASONS: mine}))
            if rejected.any()
            else None
        )
        reasons = Counter(r for text in mine for r in text.split("; "))
        index = keys_bytes(index_of(checked.key_hashes[rows], checked.keyed[rows]))
        valid = parquet_bytes(checked.valid[rows[~checked.rejected]])
        written = {VALID: valid, KEYS_FILE: index, QUARANTINED: quarantined}
        entry = Checked(
            raw=sha256, rows_in=len(frame), rows_out=int((~rejected).sum()),
            reasons=dict(reasons), shared=as_hex(shared[i]),
            recheck=any(r.endswith(IN_THE_FUTURE) for r in reasons),
            outputs={k: hashlib.sha256(v).hexdigest() for k, v in written.items() if v is not None},
        )  # fmt: skip
        outputs.append(PartitionOutputs(part, valid, quarantined, index, entry))
    return outputs
