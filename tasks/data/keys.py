"""Keys across partitions: which rows repeat a key, within one partition or across them.

A row's key is hashed from its typed values (64 bits), so each partition keeps a small
sorted index of its keys and a run that checks one new day compares that day's keys
with every other day's index, without reading their rows. Two different keys share a
hash with a probability of about n²/2⁶⁵ (3·10⁻⁶ at ten million keys); such a pair would
be quarantined as a duplicate, never passed silently.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

NO_KEYS = np.empty(0, dtype=np.uint64)


def key_hashes(typed: pd.DataFrame, key: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the hash of its key, and whether it has one (a null key column: no key,
    rejected by the not-null check instead)."""
    values = typed[key]
    keyed = ~values.isna().any(axis=1).to_numpy()
    hashes = pd.util.hash_pandas_object(values, index=False).to_numpy(dtype=np.uint64)
    return hashes, keyed


def index_of(hashes: np.ndarray, keyed: np.ndarray) -> np.ndarray:
    """A partition's key index: its distinct key hashes, sorted."""
    return np.unique(hashes[keyed])


def repeated(
    hashes: np.ndarray, keyed: np.ndarray, part_of: np.ndarray, shared: np.ndarray
) -> np.ndarray:
    """Per row: its key occurs again in its own partition, or in another one (`shared`:
    the keys of these partitions that other partitions also hold)."""
    within = pd.DataFrame({"part": part_of, "key": hashes}).duplicated(keep=False).to_numpy()
    across = np.isin(hashes, shared) if len(shared) else np.zeros(len(hashes), dtype=bool)
    return keyed & (within | across)


def shared_keys(
    indexes: Iterable[tuple[str, np.ndarray]], candidates: np.ndarray
) -> dict[str, np.ndarray]:
    """Per partition, the keys of it that another partition also holds (sorted), given
    `candidates` (sorted, distinct) that hold every key two partitions may share: only
    those are counted, so memory follows the candidates, not the history."""
    hits: dict[str, np.ndarray] = {}
    for part, keys in indexes:
        at = np.minimum(np.searchsorted(candidates, keys), max(len(candidates) - 1, 0))
        hits[part] = keys[candidates[at] == keys] if len(candidates) else NO_KEYS
    if not hits:
        return {}
    values, counts = np.unique(np.concatenate(list(hits.values())), return_counts=True)
    multi = values[counts > 1]  # each index is distinct: >1 means more than one partition
    return {part: found[np.isin(found, multi, assume_unique=True)] if len(multi) else NO_KEYS
            for part, found in hits.items()}  # fmt: skip
