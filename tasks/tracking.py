"""MLflow: where runs are stored, and the lineage tags every run carries.

Nothing here runs on import: commands call these when they start a run.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from tasks.paths import Paths

EXPERIMENT = "plumber"
FLOW_RUN_ENV = "PLUMBER_FLOW_RUN_ID"  # set by the Prefect flow for the stages it runs


def tracking_uri(paths: Paths) -> str:
    """MLFLOW_TRACKING_URI when set (a tracking server), else the local store under var/."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.var / 'mlflow' / 'mlflow.db'}"
    )


def uses_server() -> bool:
    """Whether MLFLOW_TRACKING_URI names a store other than the local one under var/."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def safe_uri(uri: str) -> str:
    """A tracking URI as it may appear in messages: any password masked."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def start(paths: Paths, name: str = EXPERIMENT) -> str:
    """Point MLflow at the store and return the experiment id (created if needed)."""
    import mlflow

    # Decided first: set_tracking_uri itself exports MLFLOW_TRACKING_URI.
    local = not uses_server()
    (paths.var / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(paths))
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    # The local store keeps artifacts beside it under var/ (MLflow's default is ./mlruns);
    # a tracking server decides for itself.
    artifacts = (paths.var / "mlflow" / "artifacts").as_uri() if local else None
    return str(client.create_experiment(name, artifact_location=artifacts))


def lineage_tags(paths: Paths, inputs_of: str) -> dict[str, str]:
    """The git commit and dirty flag, the DVC hashes of a stage's inputs, the flow run."""
    tags = {"git.commit": _git(paths, "rev-parse", "HEAD") or "unknown"}
    tags["git.dirty"] = str(bool(_git(paths, "status", "--porcelain", "--untracked-files=no")))
    lock = paths.root / "dvc.lock"
    stages = yaml.safe_load(lock.read_text()).get("stages", {}) if lock.exists() else {}
    for out in stages.get(inputs_of, {}).get("outs", []):
        tags[f"dvc.{out['path']}"] = str(out.get("md5", ""))
    if os.environ.get(FLOW_RUN_ENV):
        tags["prefect.flow_run_id"] = os.environ[FLOW_RUN_ENV]
    return tags


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params: {"train": {"lr": 0.1}} -> {"train.lr": "0.1"}."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _git(paths: Paths, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=paths.root, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
