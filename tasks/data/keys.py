"""Keys across partitions: which rows repeat a key, within one partition or across them.

A row's key is hashed from its typed values (64 bits), so each partition keeps a small
sorted index of its keys and a run that checks one new day compares that day's keys
with every other day's index, without reading their rows. Two different keys share a
hash with a probability of about n²/2⁶⁵ (3·10⁻⁶ at ten million keys); such a pair would
be quarantined as a duplicate, never passed silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


def distinct(keys: np.ndarray) -> np.ndarray:
    """The distinct values of `keys`, sorted. A sort and a compare of neighbours: numpy
    2.4's np.unique hashes 64-bit integers and was 50x slower on five million keys."""
    ordered = np.sort(keys)
    first = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def index_of(hashes: np.ndarray, keyed: np.ndarray) -> np.ndarray:
    """A partition's key index: its distinct key hashes, sorted."""
    return distinct(hashes[keyed])


def repeated(
    hashes: np.ndarray, keyed: np.ndarray, part_of: np.ndarray, shared: np.ndarray
) -> np.ndarray:
    """Per row: its key occurs again in its own partition, or in another one (`shared`:
    the keys of these partitions that other partitions also hold)."""
    within = pd.DataFrame({"part": part_of, "key": hashes}).duplicated(keep=False).to_numpy()
    across = np.isin(hashes, shared) if len(shared) else np.zeros(len(hashes), dtype=bool)
    return keyed & (within | across)


def shared_keys(
    checked: Mapping[str, np.ndarray],
    reused: Iterable[tuple[str, np.ndarray]],
    candidates: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per partition, the keys of it that another partition also holds (sorted).

    `checked`: the indexes of the partitions checked this run, whose keys are all among
    `candidates` (sorted, distinct), which hold every key two partitions may share;
    `reused`: the other partitions' indexes, read one at a time and cut down to the
    candidates, so memory follows the candidates, not the history."""
    hits = dict(checked)
    for part, keys in reused:
        at = np.minimum(np.searchsorted(candidates, keys), max(len(candidates) - 1, 0))
        hits[part] = keys[candidates[at] == keys] if len(candidates) else NO_KEYS
    if not hits:
        return {}
    found = np.sort(np.concatenate(list(hits.values())))
    # Each index is distinct: a key found twice is held by more than one partition.
    multi = distinct(found[1:][found[1:] == found[:-1]])
    return {part: keys[np.isin(keys, multi, assume_unique=True)] if len(multi) else NO_KEYS
            for part, keys in hits.items()}  # fmt: skip
