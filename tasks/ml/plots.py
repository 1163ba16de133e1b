"""PNG versions of the evaluation plots, for the MLflow run (DVC draws the CSVs itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def _not_the_font_cache_note(record: Any) -> bool:
    return "building the font cache" not in record.getMessage()


def save_pngs(folder: Path, report: dict[str, Any]) -> None:
    import logging

    import matplotlib

    # On a fresh machine matplotlib builds its font cache once and, past 5 s (a busy
    # machine), warns about it: a line in every first evaluate log that asks nothing of
    # anyone. Its other warnings (a missing font) still show.
    font_log = logging.getLogger("matplotlib.font_manager")
    if _not_the_font_cache_note not in font_log.filters:
        font_log.addFilter(_not_the_font_cache_note)

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for csv in sorted((folder / "pr").glob("*.csv")):
        curve = pd.read_csv(csv)
        ax.plot(curve["recall"], curve["precision"], label=csv.stem)
    ax.axhline(
        report["min_precision"], color="grey", linestyle="--", linewidth=1, label="precision target"
    )
    ax.set(
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall on the test window",
        ylim=(0, 1.02),
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "pr_curves.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for csv in sorted((folder / "calibration").glob("*.csv")):
        points = pd.read_csv(csv)
        ax.plot(points["mean_predicted"], points["fraction_delayed"], marker="o", label=csv.stem)
    ax.set(xlabel="mean predicted probability", ylabel="fraction delayed", title="Calibration")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "calibration.png", dpi=110)
    plt.close(fig)

    confusion = pd.read_csv(folder / "confusion.csv")
    table = pd.crosstab(confusion["actual"], confusion["predicted"]).reindex(
        index=[0, 1], columns=[0, 1], fill_value=0
    )
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(table.to_numpy(), cmap="Blues")
    for (i, j), value in pd.DataFrame(table.to_numpy()).stack().items():
        ax.text(j, i, f"{value:,}", ha="center", va="center")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["on time", "warn"],
        yticklabels=["on time", "delayed"],
        xlabel="predicted",
        ylabel="actual",
        title=f"At threshold {report['threshold']:.3f}",
    )
    fig.tight_layout()
    fig.savefig(folder / "confusion.png", dpi=110)
    plt.close(fig)
