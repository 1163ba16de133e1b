"""The pure steps of `plumber reproduce` and `plumber lineage`: references, the pinned
dvc.lock, and the comparison that tells identical from different."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.core.errors import ConfigError
from tasks.ops import chain
from tasks.ops.compare import compare
from tasks.ops.reproduce import inputs_of, pin_inputs

LOCK = {"stages": {
    "validate": {"outs": [{"path": "data/validated", "hash": "md5", "md5": "new.dir",
                           "size": 9, "nfiles": 3}]},
    "featurize": {"deps": [{"path": "tasks/featurize.py", "md5": "code"},
                           {"path": "data/validated", "hash": "md5", "md5": "old.dir",
                            "size": 6, "nfiles": 2}],
                  "outs": [{"path": "data/features", "md5": "f.dir"}]},
}}  # fmt: skip


def test_the_first_rebuilt_stage_reads_what_it_read_then() -> None:
    """validate ran again after the training: the rebuild still fetches the old data."""
    pinned = pin_inputs(json.loads(json.dumps(LOCK)))
    out = pinned["stages"]["validate"]["outs"][0]
    assert (out["md5"], out["size"], out["nfiles"]) == ("old.dir", 6, 2)
    assert inputs_of(pinned) == ["data/validated"]  # code is not fetched, it is in git


@pytest.mark.parametrize("ref", ["a b", "models:/x", "../etc", ""])
def test_a_reference_that_names_nothing_is_a_usage_error(ref: str) -> None:
    with pytest.raises(ConfigError, match="is not a model version, alias"):
        chain.resolve(object(), "flight-delay", ref)


def test_a_run_id_needs_no_registry() -> None:
    ref = chain.resolve(object(), "flight-delay", "0123456789abcdef0123456789abcdef")
    assert ref == chain.Ref("0123456789abcdef0123456789abcdef")


def cache_put(work: Path, path: Path) -> str:
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    dest = work / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(path.read_bytes())
    return md5


def outputs(work: Path, weight: float, proba: list[float]) -> tuple[str, str, bytes]:
    """A checkpoint, predictions and metrics in `work`, as the stages write them."""
    (work / "models").mkdir(parents=True, exist_ok=True)
    (work / "reports").mkdir(parents=True, exist_ok=True)
    state = {"w": torch.full((2, 2), weight), "b": torch.zeros(2)}
    torch.save({"config": {"hidden": [2]}, "state_dict": state}, work / "models/model.pt")
    frame = pd.DataFrame({"flight": [1, 2], "proba": np.array(proba)})
    frame.to_parquet(work / "reports/test_predictions.parquet")
    metrics = json.dumps({"model": {"recall_at_precision": proba[-1]}}).encode()
    (work / "reports/metrics.json").write_bytes(metrics)
    return (cache_put(work, work / "models/model.pt"),
            cache_put(work, work / "reports/test_predictions.parquet"), metrics)  # fmt: skip


def lock_of(model: str, preds: str) -> dict:
    return {"stages": {
        "train": {"outs": [{"path": "models/model.pt", "md5": model}]},
        "evaluate": {"outs": [{"path": "reports/test_predictions.parquet", "md5": preds}]},
    }}  # fmt: skip


def test_identical_outputs_compare_equal(tmp_path: Path) -> None:
    model, preds, metrics = outputs(tmp_path, 0.5, [0.1, 0.2])
    rows = compare(tmp_path, lock_of(model, preds), metrics)
    assert [r.same for r in rows] == [True, True, True]


def test_a_different_rebuild_is_shown_row_by_row(tmp_path: Path) -> None:
    model, preds, metrics = outputs(tmp_path, 0.5, [0.1, 0.2])  # recorded, into the cache
    outputs(tmp_path, 0.5000001, [0.1, 0.2003])  # then rebuilt, a little different
    rows = {r.what: r for r in compare(tmp_path, lock_of(model, preds), metrics)}
    assert not rows["model weights"].same
    assert not rows["reports/metrics.json"].same
    assert rows["reports/metrics.json"].detail == (
        "recall_at_precision 0.2 recorded, 0.2003 rebuilt"
    )
    preds_row = rows["reports/test_predictions.parquet"]
    assert not preds_row.same
    assert preds_row.detail == "largest difference in probability 0.0003"
