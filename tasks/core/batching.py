"""Whole units (days, partitions) grouped into batches of about a number of rows."""

from __future__ import annotations

from collections.abc import Mapping


def in_batches(rows_of: Mapping[str, int], max_rows: int) -> list[list[str]]:
    """The units of `rows_of` in sorted order, grouped so a batch holds about `max_rows`
    rows (at least one unit). One vectorised pass over a batch costs far less than a
    pass per unit, and memory stays bounded by the batch, not by the whole."""
    batches: list[list[str]] = []
    size = 0
    for unit in sorted(rows_of):
        if not batches or size + rows_of[unit] > max_rows:
            batches.append([])
            size = 0
        batches[-1].append(unit)
        size += rows_of[unit]
    return batches
