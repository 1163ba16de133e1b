"""MLflow: where runs are stored, and the lineage tags every run carries.

Nothing here runs on import: commands call these when they start a run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from tasks.core.paths import Paths
from tasks.core.secrets import mask_urls, without_credentials

T = TypeVar("T")

FLOW_RUN_ENV = "PLUMBER_FLOW_RUN_ID"  # set by the Prefect flow for the stages it runs
FLOW_RUN_TAG = "prefect.flow_run_id"  # the flow run a training run was part of


def tracking_uri(paths: Paths) -> str:
    """MLFLOW_TRACKING_URI when set (a tracking server), else the local store under var/;
    never the local store while a stack profile is in use (tasks/core/profile.py)."""
    from tasks.core.profile import TRACKING, require_shared

    require_shared(TRACKING, "MLflow runs and the model registry")
    return os.environ.get(TRACKING) or f"sqlite:///{paths.mlflow_db}"


def uses_server(paths: Paths) -> bool:
    """Whether MLFLOW_TRACKING_URI names a store other than the local one under var/ (which
    MLflow itself exports once a process pointed at it)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return bool(uri) and uri != f"sqlite:///{paths.mlflow_db}"


def prepare(paths: Paths) -> str:
    """Point MLflow at the store, bounding how long its calls may take, and check that a
    tracking server answers: a clear error naming it (password masked) instead of
    minutes of retries and a traceback. Returns the tracking URI."""
    import mlflow

    from tasks.core.config import load_params

    cfg = load_params(paths.params).tracking
    # MLflow's own defaults retry a dead server for minutes (7 retries, 120 s each).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.request_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(cfg.request_timeout_seconds)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    uri = tracking_uri(paths)
    if uri.startswith(("http://", "https://")):
        check_server(uri, cfg.connect_timeout_seconds, cfg.connect_attempts)
    else:
        (paths.mlflow_store).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def check_server(uri: str, timeout: float, attempts: int) -> None:
    """Raise StepError unless the tracking server at `uri` answers its health check."""
    import httpx
    from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_fixed

    from tasks.core.errors import StepError
    from tasks.core.retries import last_result

    parts = urlsplit(uri)
    auth = (parts.username or "", parts.password or "") if parts.password else None
    health = f"{without_credentials(uri).rstrip('/')}/health"

    def problem() -> str:
        """ "" when it answers, else why not."""
        try:
            answer = httpx.get(health, auth=auth, timeout=timeout)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return "" if answer.status_code < 400 else f"HTTP {answer.status_code}"

    # Asking again with the same credentials will not help: 401 and 403 are final.
    found = Retrying(
        stop=stop_after_attempt(attempts), wait=wait_fixed(1),
        retry=retry_if_result(lambda why: why not in ("", "HTTP 401", "HTTP 403")),
        retry_error_callback=last_result,
    )(problem)  # fmt: skip
    if found:
        raise StepError(
            f"the MLflow tracking server at {mask_urls(uri)} does not answer ({found}; "
            f"{attempts} attempt(s) of {timeout:g} s: tracking.connect_timeout_seconds, "
            "tracking.connect_attempts); check MLFLOW_TRACKING_URI"
        )


def store_problem(paths: Paths, uri: str, exc: BaseException) -> str:
    """Why the tracking store cannot be used, in one line that names it and a way out."""
    cause = getattr(exc, "orig", None) or exc.__cause__ or exc
    detail = (str(cause).strip().splitlines() or [""])[0][:200]
    what = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
    store = paths.mlflow_db
    if uri != f"sqlite:///{store}":  # decided by the URI: MLflow exports it once set
        return (f"the MLflow tracking server at {mask_urls(uri)} cannot be used ({what}); "
                "nothing was changed")  # fmt: skip
    return (
        f"the local MLflow store {store} cannot be read ({what}); nothing was changed. "
        f"Restore it from a backup, or move it aside (mv {store} {store}.bad) and the next "
        "run starts a new store (its runs and registry then live only in the moved file)"
    )


def artifact_store_down(exc: BaseException) -> str | None:
    """When an artifact upload through the MLflow server's proxy (mlflow-artifacts:) failed
    because the object store behind it does not answer: one line naming that store and its
    address (AWS_ENDPOINT_URL, the stack profile's), where MLflow's own error names only its
    server's port. None for any other failure."""
    import socket

    from tasks.core.profile import OBJECT_STORE

    seen: BaseException | None = exc
    text = ""
    while seen is not None:  # MLflow wraps the transport's error at times
        text += f" {seen}"
        seen = seen.__cause__ or seen.__context__
    endpoint = os.environ.get(OBJECT_STORE)
    if "mlflow-artifacts" not in text or not endpoint:
        return None
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=5).close()
        return None  # it answers: MLflow's own error says more
    except OSError as down:
        problem = down.strerror or type(down).__name__
    server = mask_urls(os.environ.get("MLFLOW_TRACKING_URI", ""))
    return (f"the object store at {mask_urls(endpoint)} does not answer ({problem}): the "
            f"MLflow server at {server} keeps artifacts there and could not store this "
            "run's; start it (`make stack-up`) and run again")  # fmt: skip


def not_found(exc: BaseException) -> bool:
    """MLflow's answer for a run, model, version or alias that does not exist, from any
    store (an alias that is not set comes as INVALID_PARAMETER_VALUE "... not found")."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    code = exc.error_code
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message
    )


def find(what: str, ask: Callable[[], T]) -> T | None:
    """`ask()`'s answer, None when MLflow says `what` does not exist; any other failure
    (a dead server, a broken store) is a StepError naming `what`, never taken for absence."""
    from tasks.core.errors import StepError

    try:
        return ask()
    except Exception as exc:
        if not_found(exc):
            return None
        raise StepError(
            f"MLflow could not be asked for {what}: {type(exc).__name__}: {exc}"
        ) from None


def experiment_name(paths: Paths) -> str:
    """tracking.experiment, unless MLFLOW_EXPERIMENT_NAME (MLflow's own variable) names
    another: `plumber reproduce --log` sends a rebuild's run to a scratch experiment."""
    from tasks.core.config import load_params

    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or load_params(paths.params).tracking.experiment


def start(paths: Paths, experiment: str | None = None) -> str:
    """Point MLflow at the store and return the id of the experiment `experiment` (by
    default experiment_name's), created if needed."""
    import mlflow

    name = experiment or experiment_name(paths)
    # Decided first: set_tracking_uri itself exports MLFLOW_TRACKING_URI.
    local = not uses_server(paths)
    uri = prepare(paths)
    try:
        client = mlflow.MlflowClient()
        found = client.get_experiment_by_name(name)
    except Exception as exc:  # a dead server or a corrupt store: one line, not a traceback
        from tasks.core.errors import StepError

        raise StepError(store_problem(paths, uri, exc)) from None
    if found is not None:
        for key, value in experiment_tags(name).items():  # one made before these tags
            if key not in found.tags:
                client.set_experiment_tag(found.experiment_id, key, value)
        return str(found.experiment_id)
    # The local store keeps artifacts beside it under var/ (MLflow's default is ./mlruns);
    # a tracking server decides for itself.
    artifacts = (paths.mlflow_store / "artifacts").as_uri() if local else None
    return str(
        client.create_experiment(name, artifact_location=artifacts, tags=experiment_tags(name))
    )


# MLflow 3 opens an experiment without this tag in its GenAI mode (traces, judges,
# "Evaluation runs"); these are model-training experiments.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
DESCRIPTIONS = {
    "-data": "Plumber's data versions: one run per flow run that collected, with the "
    "dvc.lock, manifest and outputs the next run restores (docs/deployment.md, 'Running on shared "
    "infrastructure').",
    "-releases": "Plumber's release history: one run per registered model, with every "
    "release and rollback as history.txt and one JSON file per entry (`plumber releases`).",
    "-reproduce": "Rebuilds of released models by `plumber reproduce --log`, compared bit "
    "for bit with the originals.",
    "": "Plumber's training runs: one per candidate model, with its params, per-epoch "
    "curves, evaluation against the baselines and its lineage record. Released versions are "
    "in the Model Registry (Models tab).",
}


def experiment_tags(name: str) -> dict[str, str]:
    """The kind and description (MLflow's note) an experiment of ours is created with."""
    suffix = next(s for s in DESCRIPTIONS if name.endswith(s))
    return {**EXPERIMENT_KIND, "mlflow.note.content": DESCRIPTIONS[suffix]}


def lineage_tags(paths: Paths, inputs_of: str) -> dict[str, str]:
    """The git commit and dirty flag, the DVC hashes of a stage's inputs, the flow run."""
    tags = {"git.commit": _git(paths, "rev-parse", "HEAD") or "unknown"}
    tags["git.dirty"] = str(bool(_git(paths, "status", "--porcelain", "--untracked-files=no")))
    lock = paths.dvc_lock
    stages = yaml.safe_load(lock.read_text()).get("stages", {}) if lock.exists() else {}
    for out in stages.get(inputs_of, {}).get("outs", []):
        tags[f"dvc.{out['path']}"] = str(out.get("md5", ""))
    if os.environ.get(FLOW_RUN_ENV):
        tags[FLOW_RUN_TAG] = os.environ[FLOW_RUN_ENV]
    return tags


WINDOWS = ("train", "valid")  # a metric key's prefix naming its window; none means test


def run_page(experiment: str, run: str, path: str = "", ui: str = "") -> str:
    """A run's page in the MLflow UI at `ui` ("" for a link inside the UI itself), or
    `path` under it ("artifacts/evidence/version-3.md"). It says it is a model-training
    page: without workflowType the UI opens a run in its GenAI layout, whatever the
    experiment's kind ("Evaluations", traces and judges in the sidebar)."""
    tail = f"/{path}" if path else ""
    return f"{ui}#/experiments/{experiment}/runs/{run}{tail}?workflowType=machine_learning"


def epoch_metric(key: str) -> str:
    """A per-epoch curve's name: "train_loss" -> "epoch/train_loss". The MLflow UI sorts
    its chart sections by name, and "epoch" comes before "test", "train" and "valid": the
    curves are the first charts of a run, the single values after them."""
    return f"epoch/{key}"


CANDIDATE = "model"  # the evaluated model's name beside its baselines


def metric_name(key: str, model: str | None = None) -> str:
    """A metric's name in MLflow, which groups charts by what comes before a "/" and
    sorts the groups by name: "train_loss" -> "train/loss", "valid_pr_auc" ->
    "valid/pr_auc"; an evaluation's ("pr_auc", "model") -> "test/model/pr_auc", and a
    baseline's ("pr_auc", "majority") -> "test_baseline/majority/pr_auc", so the model's
    group comes before every baseline's ("test/" sorts before "test_")."""
    window, _, rest = key.partition("_")
    if window not in WINDOWS or not rest:
        window, rest = "test", key
    if model not in (None, CANDIDATE):
        window = f"{window}_baseline"
    return "/".join(part for part in (window, model, rest) if part)


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
