"""plumber predict's input checks, before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import StepError
from tasks.release.predict import read_rows


def test_bad_input_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(StepError, match=r"rows\.txt: use a \.csv or \.parquet file"):
        read_rows(tmp_path / "rows.txt")
    with pytest.raises(StepError, match=r"missing\.csv not found"):
        read_rows(tmp_path / "missing.csv")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(StepError, match=r"cannot read .*broken\.parquet"):
        read_rows(broken)
