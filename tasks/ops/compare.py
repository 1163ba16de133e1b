"""A rebuilt model against its record: the weights (every tensor, not the file's bytes),
metrics.json and the test predictions, each by SHA-256, with a word on what differs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Compared:
    what: str
    recorded: str  # SHA-256
    rebuilt: str
    detail: str = ""

    @property
    def same(self) -> bool:
        return self.recorded == self.rebuilt


def _cached(work: Path, md5: str) -> Path:
    return work / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _recorded_md5(lock: dict[str, Any], stage: str, path: str) -> str:
    outs = {
        o["path"]: o.get("md5") for o in (lock.get("stages") or {}).get(stage, {}).get("outs", [])
    }
    return str(outs[path])


def weights_sha256(path: Path) -> str:
    """SHA-256 of a checkpoint's config and every tensor (name, dtype, shape, bytes): the
    weights themselves, whatever the file's container bytes."""
    import torch

    data = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256(json.dumps(data["config"], sort_keys=True).encode())
    for name, tensor in sorted(data["state_dict"].items()):
        array = tensor.detach().contiguous().numpy()
        digest.update(f"{name}|{array.dtype}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def compare(work: Path, lock: dict[str, Any], metrics: bytes) -> list[Compared]:
    """The rebuilt weights, metrics.json and test predictions against the recorded ones."""
    import pandas as pd

    model = _cached(work, _recorded_md5(lock, "train", "models/model.pt"))
    preds_path = "reports/test_predictions.parquet"
    recorded_preds = _cached(work, _recorded_md5(lock, "evaluate", preds_path))
    rebuilt_preds = work / preds_path
    out = [
        Compared("model weights", weights_sha256(model), weights_sha256(work / "models/model.pt")),
        Compared("reports/metrics.json", _sha256(metrics),
                 _sha256((work / "reports/metrics.json").read_bytes()),
                 _metrics_detail(metrics, (work / "reports/metrics.json").read_bytes())),
    ]  # fmt: skip
    old, new = pd.read_parquet(recorded_preds), pd.read_parquet(rebuilt_preds)
    if len(old) != len(new):
        detail = f"{len(old):,} rows recorded, {len(new):,} rebuilt"
    else:
        largest = float((old["proba"] - new["proba"]).abs().max())
        detail = f"largest difference in probability {largest:.3g}"
    out.append(Compared(preds_path, _sha256(recorded_preds.read_bytes()),
                        _sha256(rebuilt_preds.read_bytes()), detail))  # fmt: skip
    return out


def _metrics_detail(recorded: bytes, rebuilt: bytes) -> str:
    """The model's service metric, recorded and rebuilt."""
    try:
        a, b = json.loads(recorded)["model"], json.loads(rebuilt)["model"]
    except (ValueError, KeyError):
        return ""
    key = "recall_at_precision"
    return f"{key} {a.get(key)} recorded, {b.get(key)} rebuilt"
