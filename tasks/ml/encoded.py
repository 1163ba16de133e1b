"""A window's feature rows encoded for training, day by day, into memory-mapped arrays.

Training never holds a window as a frame: each day's rows are read, encoded
(`Encoders.transform`) and written into .npy files mapped into memory, so the process
needs the model, one day's frame and the batch it is stepping on; the encoded rows
(about 220 bytes each) live in the page cache, which the kernel may reclaim and re-read.
The values are those of encoding the whole window at once: the encoding is row by row.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.ml import feature_store as store
from tasks.ml.encoders import Encoders
from tasks.ml.features import CATEGORICAL, LABEL, NUMERIC


@dataclass(frozen=True)
class EncodedWindow:
    days: list[str]
    codes: np.ndarray  # [n, n_categorical] int64, memory-mapped
    numeric: np.ndarray  # [n, 2 * n_numeric] float32 (scaled values, missing flags)
    y: np.ndarray  # [n] float32

    def __len__(self) -> int:
        return len(self.y)


def window_rows(features: Path, days: list[str]) -> int:
    return sum(store.read_day_stats(features, d).rows for d in days)


def encode_window(features: Path, name: str, encoders: Encoders, folder: Path) -> EncodedWindow:
    """The window `name` encoded into `folder` (replaced), one day in memory at a time."""
    days = store.read_windows(features)[name]
    n = window_rows(features, days)
    shutil.rmtree(folder / name, ignore_errors=True)
    (folder / name).mkdir(parents=True)

    def mapped(what: str, dtype: type, *width: int) -> np.ndarray:
        path = folder / name / f"{what}.npy"
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, *width))

    codes = mapped("codes", np.int64, len(CATEGORICAL))
    numeric = mapped("numeric", np.float32, 2 * len(NUMERIC))
    y = mapped("y", np.float32)
    at = 0
    for day in days:
        rows = pd.read_parquet(store.day_rows_file(features, day))
        if not len(rows):
            continue
        day_codes, day_numeric = encoders.transform(rows)
        codes[at : at + len(rows)] = day_codes
        numeric[at : at + len(rows)] = day_numeric
        y[at : at + len(rows)] = rows[LABEL].to_numpy(dtype=np.float32)
        at += len(rows)
    if at != n:
        raise ValueError(f"{name}: the day records count {n} rows, the day files {at}")
    for array in (codes, numeric, y):
        array.flush()  # type: ignore[attr-defined]
    return EncodedWindow(days, codes, numeric, y)
