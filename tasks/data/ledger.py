"""What validate made of each partition, kept beside its outputs so the next run reuses it.

    data/validated/<source>/_ledger.json      per partition: the raw SHA-256 it was checked
                                              from, its counts and reasons, and the keys it
                                              was checked as sharing with other partitions
    data/validated/<source>/_keys/<part>.npy  the partition's key index (tasks/data/keys.py)

A partition is reused when its raw bytes, the checks (code, params, reference codes:
the ledger's `fingerprint`) and the keys it shares with others are what they were, when
none of its rows was rejected as recorded in the future (time may make it valid), and
when its outputs are still the bytes validate wrote (their SHA-256s are in the ledger: a
file damaged or edited in place is checked again from the raw partition, not carried on).
The ledger travels with the data version, so a run on another machine is incremental too.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.io import read_json, sha256_file, write_json

log = logging.getLogger(__name__)

LEDGER = "_ledger.json"
KEYS = "_keys"


@dataclass(frozen=True)
class Checked:
    """One partition's result, as the ledger keeps it."""

    raw: str  # SHA-256 of the raw partition
    rows_in: int
    rows_out: int
    reasons: dict[str, int]
    shared: list[str]  # hex key hashes it was checked as sharing with other partitions
    recheck: bool  # rows rejected as recorded in the future: check again next run
    outputs: dict[str, str]  # SHA-256 of each file written, by name (VALID...)

    def to_json(self) -> dict[str, Any]:
        return {"raw": self.raw, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "reasons": dict(sorted(self.reasons.items())), "shared": self.shared,
                "recheck": self.recheck, "outputs": dict(sorted(self.outputs.items()))}  # fmt: skip


# The names of a partition's outputs in `Checked.outputs`.
VALID, KEYS_FILE, QUARANTINED = "valid", "keys", "quarantined"


@dataclass
class Ledger:
    fingerprint: str
    partitions: dict[str, Checked] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path, fingerprint: str) -> Ledger:
        """The ledger of `folder`, or an empty one when it is missing, unreadable or was
        written for other checks (everything is then checked again)."""
        try:
            data = read_json(folder / LEDGER)
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
            return cls(fingerprint)
        try:
            parts = {name: Checked(**entry) for name, entry in data["partitions"].items()}
        except (KeyError, TypeError):
            return cls(fingerprint)
        return cls(fingerprint, parts)

    def reusable(self, part: str, raw_sha256: str, validated: Path, quarantine: Path) -> bool:
        """Whether `part`'s outputs in these folders can be carried into the new version."""
        entry = self.partitions.get(part)
        if entry is None or entry.raw != raw_sha256 or entry.recheck:
            return False
        for what, path in output_files(part, validated, quarantine).items():
            expected, present = entry.outputs.get(what), path.exists()
            if expected is None and not present:
                continue
            if expected is None or not present or sha256_file(path) != expected:
                log.warning("%s is not the file validate wrote: its partition is checked "
                            "again from the raw bytes", path)  # fmt: skip
                return False
        return True

    def write(self, folder: Path) -> None:
        parts = {name: self.partitions[name].to_json() for name in sorted(self.partitions)}
        write_json(folder / LEDGER, {"fingerprint": self.fingerprint, "partitions": parts})

    def totals(self) -> tuple[int, int, Counter[str]]:
        reasons: Counter[str] = Counter()
        for entry in self.partitions.values():
            reasons.update(entry.reasons)
        rows_in = sum(e.rows_in for e in self.partitions.values())
        rows_out = sum(e.rows_out for e in self.partitions.values())
        return rows_in, rows_out, reasons


def pending_rechecks(validated: Path) -> list[str]:
    """`source/partition` of each partition whose rows validate rejected as recorded in
    the future: checked again on every run until their time has come."""
    pending = []
    for ledger in sorted(validated.glob(f"*/{LEDGER}")):
        try:
            parts = read_json(ledger)["partitions"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged ledger: validate checks everything again anyway
        pending += [f"{ledger.parent.name}/{part}" for part, entry in sorted(parts.items())
                    if isinstance(entry, dict) and entry.get("recheck")]  # fmt: skip
    return pending


def output_files(part: str, validated: Path, quarantine: Path) -> dict[str, Path]:
    """Where a partition's outputs live, by their names in `Checked.outputs`."""
    return {VALID: validated / part, KEYS_FILE: key_file(validated, part),
            QUARANTINED: quarantine / part}  # fmt: skip


def key_file(folder: Path, part: str) -> Path:
    return folder / KEYS / f"{Path(part).stem}.npy"


def keys_bytes(index: np.ndarray) -> bytes:
    """A key index as .npy bytes (deterministic: a fixed header and the values)."""
    buffer = io.BytesIO()
    np.save(buffer, index.astype(np.uint64), allow_pickle=False)
    return buffer.getvalue()


def read_keys(folder: Path, part: str) -> np.ndarray:
    return np.load(key_file(folder, part), allow_pickle=False)


def as_hex(keys: np.ndarray) -> list[str]:
    return [f"{int(k):016x}" for k in keys]


def from_hex(keys: list[str]) -> np.ndarray:
    return np.array([int(k, 16) for k in keys], dtype=np.uint64)
