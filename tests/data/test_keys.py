"""Key indexes and the keys partitions share, against plain numpy and Python sets."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.data.keys import NO_KEYS, distinct, shared_keys


@pytest.mark.parametrize("size", [0, 1, 2, 1000])
def test_distinct_is_np_unique(size: int) -> None:
    rng = np.random.default_rng(size)
    keys = rng.integers(0, 50, size, dtype=np.uint64)  # many repeats
    assert distinct(keys).tolist() == np.unique(keys).tolist()
    assert distinct(keys).dtype == np.uint64


def test_shared_keys_names_each_key_held_by_more_than_one_partition() -> None:
    rng = np.random.default_rng(7)
    parts = {f"p{i}": distinct(rng.integers(0, 300, 100, dtype=np.uint64)) for i in range(5)}
    holders: dict[int, set[str]] = {}
    for part, keys in parts.items():
        for key in keys.tolist():
            holders.setdefault(key, set()).add(part)
    checked = {p: parts[p] for p in ("p0", "p1")}
    reused = [(p, parts[p]) for p in ("p2", "p3", "p4")]
    candidates = distinct(np.concatenate(list(parts.values())))
    found = shared_keys(checked, reused, candidates)
    for part, keys in parts.items():
        expected = sorted(k for k in keys.tolist() if len(holders[k]) > 1)
        assert found[part].tolist() == expected, part
    # Of the reused partitions, only keys among the candidates are counted: with only the
    # checked ones' keys as candidates, a key shared by p2 and p3 alone is not looked for.
    only_checked = shared_keys(checked, reused, distinct(np.concatenate(list(checked.values()))))
    for part, keys in parts.items():
        expected = sorted(k for k in keys.tolist() if len(holders[k] & {"p0", "p1"})
                          and len(holders[k]) > 1)  # fmt: skip
        assert only_checked[part].tolist() == expected, part
    assert shared_keys({}, [], NO_KEYS) == {}
