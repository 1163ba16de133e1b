"""The evaluation's PNGs: drawn from the CSVs, without matplotlib's one-time font-cache note."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from tasks.ml.plots import save_pngs


def test_the_plots_are_drawn_and_the_font_cache_note_is_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pr").mkdir()
    (tmp_path / "calibration").mkdir()
    pd.DataFrame({"recall": [0.0, 0.5, 1.0], "precision": [1.0, 0.7, 0.3]}).to_csv(
        tmp_path / "pr" / "model.csv", index=False
    )
    pd.DataFrame({"mean_predicted": [0.1, 0.8], "fraction_delayed": [0.12, 0.75]}).to_csv(
        tmp_path / "calibration" / "model.csv", index=False
    )
    pd.DataFrame({"actual": [0, 1, 1], "predicted": [0, 1, 0]}).to_csv(
        tmp_path / "confusion.csv", index=False
    )
    save_pngs(tmp_path, {"min_precision": 0.6, "threshold": 0.42})
    for name in ("pr_curves.png", "calibration.png", "confusion.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG"), name
    fonts = logging.getLogger("matplotlib.font_manager")
    with caplog.at_level(logging.WARNING):
        fonts.warning("Matplotlib is building the font cache; this may take a moment.")
        fonts.warning("findfont: Font family 'Nope' not found.")
    assert [r.getMessage() for r in caplog.records] == ["findfont: Font family 'Nope' not found."]
