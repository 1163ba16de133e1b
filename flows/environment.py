"""The environment every `plumber` command and every flow run shares, set before Prefect,
MLflow or DVC is imported (they read their settings once, at import)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks.core.config import load_params
from tasks.core.paths import Paths


def use_project_environment(paths: Paths) -> None:
    """Settings every command shares; explicit environment variables still win. With a
    stack profile (PLUMBER_STACK), its servers; the embedded defaults otherwise."""
    from tasks.core.profile import configure_dvc_remote, load_profile

    if load_profile() is not None:
        configure_dvc_remote(paths.root)
    # DVC stages run `python -m tasks.<step>`: make that the interpreter running plumber.
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("PREFECT_HOME", str(paths.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,flows")
    # Tracebacks to var/prefect/plumber.log and the run's log, not the terminal.
    logging_yml = Path(__file__).with_name("logging.yml")  # flows/logging.yml
    os.environ.setdefault("PREFECT_LOGGING_SETTINGS_PATH", str(logging_yml))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # the log file's
    # Lines logged before or after a flow run (a lock's wait) stay on the terminal only.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    # How long a call waits for a Prefect server that stopped answering. Prefect reads its
    # settings once, at import: set before it is (a worker's flow run inherits the worker's).
    retries = _server_retries(paths)
    if retries is not None:
        os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", str(retries))
    # Every flow run sends a heartbeat: the server's zombie detection (flows/heartbeats.py).
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    # Loading a registered model draws a progress bar per file: noise in logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _server_retries(paths: Paths) -> int | None:
    """flow.server_retries; None (Prefect's default) where params.yaml cannot be read
    (the command that reads it says why)."""
    try:
        return load_params(paths.params).flow.server_retries
    except Exception:  # reported by the command itself, not here
        return None
