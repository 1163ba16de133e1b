"""The typed shape of params.yaml.

Every value's default lives in params.yaml itself, the one place (DVC reads each stage's
params there too); these models give each key its type and bounds. Every section is a
pydantic model with ``extra="forbid"``, so a misspelt key is an error that names it, and a
missing one too. The same models type the Prefect flow's parameters.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.core.config_flow import FlowParams, ServeParams, ServerParams  # noqa: F401
from tasks.core.config_sources import (  # noqa: F401  (the sources' types, from here too)
    CollectParams,
    FilesSource,
    HttpSource,
    Source,
    SqlSource,
    _known_timezone,
    _Strict,
)
from tasks.core.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


class ValidateParams(_Strict):
    max_reject_rate: float = Field(ge=0, le=1)
    extra_airport_codes: list[str] = Field(
        description="Valid airports missing from the reference file."
    )
    max_clock_skew_hours: float = Field(ge=0)
    batch_rows: int = Field(gt=0, description="Rows checked at once (memory).")


class FeaturizeParams(_Strict):
    delay_minutes: float = Field(
        gt=0, description="The label: departed this late or later, or cancelled."
    )
    history_gap_minutes: float = Field(
        ge=0, description="Other flights count only if known this long before."
    )
    recent_minutes: float = Field(
        gt=0, description="The window of the recent delay rate at the origin."
    )
    plane_legs_back: int = Field(
        ge=1, description="Earlier legs searched for the plane's last departure."
    )
    test_days: int = Field(ge=1)
    valid_days: int = Field(ge=1)
    train_max_days: int | None = Field(ge=1)
    min_category_count: int = Field(ge=1, description="Rarer values are 'unknown'.")
    batch_rows: int = Field(gt=0, description="Flights built at once (memory).")


class TrainParams(_Strict):
    seed: int
    threads: int = Field(ge=1, description="torch threads; fixed for determinism")
    device: str = Field(pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    patience: int = Field(ge=1, description="epochs without a better valid PR-AUC")
    hidden: list[int] = Field(min_length=1)
    dropout: float = Field(ge=0, lt=1)
    max_embedding_dim: int = Field(ge=1)
    members: int = Field(ge=1, description="networks in the ensemble")


class EvaluateParams(_Strict):
    min_precision: float = Field(gt=0, lt=1, description="the service requirement")
    top_carriers: int = Field(ge=1, description="carriers with their own slice")
    calibration_bins: int = Field(ge=2)


class ReleaseParams(_Strict):
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # Absolute floors on the test window.
    min_recall_at_precision: float = Field(ge=0, le=1)
    min_pr_auc: float = Field(ge=0, le=1)
    # Lift over the baselines on the service metric.
    min_lift_over_majority: float = Field(ge=-1, le=1)
    min_lift_over_logistic_regression: float = Field(ge=-1, le=1)
    # Against the champion, re-scored on the candidate's test rows.
    max_regression: float = Field(ge=0, le=1)
    min_improvement: float = Field(ge=0, le=1)
    # Each origin airport's service metric at least this fraction of the overall.
    min_slice_fraction: float = Field(ge=0, le=1)
    max_p99_latency_ms: float = Field(gt=0)
    max_model_mb: float = Field(gt=0)
    # A candidate whose record is incomplete or whose data the DVC remote lacks is rejected.
    require_reproducible: bool
    smoke_rows: int = Field(ge=1, description="test rows the smoke test predicts")
    smoke_tolerance: float = Field(gt=0, description="vs evaluate's predictions")
    smoke_timeout_seconds: float = Field(gt=0)
    latency_samples: int = Field(ge=10)
    latency_rounds: int = Field(ge=1, description="the best round's p99 is judged")
    lock_timeout_seconds: float = Field(ge=0)


class RetrainWhen(_Strict):
    """A run retrains when either holds (or with --force); otherwise it stops after
    validation with "no retrain needed"."""

    source: str = Field(description="the collect source whose new rows count (by day)")
    new_rows: int = Field(
        ge=1, description="validated rows of `source` newer than the last training's"
    )
    days_since_training: float = Field(gt=0)


class TrackingParams(_Strict):
    """Where runs go, and how long MLflow may take to answer before a step fails naming
    the tracking server."""

    experiment: str = Field(min_length=1, description="of every run")
    connect_timeout_seconds: float = Field(gt=0)
    connect_attempts: int = Field(ge=1, description="of the start-up check")
    request_timeout_seconds: float = Field(gt=0, description="each MLflow call")
    request_retries: int = Field(ge=0, description="of each MLflow call")


class LineageParams(_Strict):
    """Each candidate's record (tasks/lineage/record.py) and where its data goes."""

    remote: str = Field(description="DVC remote name; empty: core.remote")
    push_attempts: int = Field(ge=1, description="of dvc push, on failure")
    push_retry_delay_seconds: float = Field(ge=0, description="doubling")
    push_timeout_seconds: float = Field(gt=0, description="one dvc push")
    data_branch: str = Field(description="empty: no data commits")

    @field_validator("data_branch")
    @classmethod
    def _branch_name(cls, name: str) -> str:
        if name and (name.startswith(("-", "/")) or ".." in name or " " in name):
            raise ValueError(f"{name!r} is not a git branch name")
        return name


class ScheduleParams(_Strict):
    retrain_when: RetrainWhen


class ComputeParams(_Strict):
    workers: int = Field(ge=1, description="1: in the step's process; more: a local Dask cluster")
    address_env: str = Field(description="The variable naming a Dask scheduler.")
    connect_timeout_seconds: float = Field(gt=0)
    in_flight: int = Field(
        ge=1, description="Batches queued per worker (bounds the step's memory)."
    )


class Params(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)

    collect: CollectParams
    validate_: ValidateParams = Field(alias="validate")
    featurize: FeaturizeParams
    train: TrainParams
    evaluate: EvaluateParams
    release: ReleaseParams
    flow: FlowParams
    schedule: ScheduleParams
    tracking: TrackingParams
    lineage: LineageParams
    compute: ComputeParams

    @model_validator(mode="after")
    def _retrain_source_is_collected(self) -> Params:
        name, sources = self.schedule.retrain_when.source, self.collect.sources
        if name not in sources:
            raise ValueError(f"schedule.retrain_when.source: {name!r} is not a source in "
                             f"collect.sources ({', '.join(sources)})")  # fmt: skip
        if not sources[name].enabled or sources[name].partition_by is None:
            raise ValueError(f"schedule.retrain_when.source: {name!r} must be an enabled "
                             "source partitioned by day (partition_by), so its new rows "
                             "can be counted")  # fmt: skip
        return self

    def secret_env_names(self) -> list[str]:
        """Environment variables whose whole value is a secret (tokens, webhook URLs)."""
        names = [s.token_env for s in self.collect.sources.values() if isinstance(s, HttpSource)]
        return [n for n in [*names, self.flow.notify_url_env] if n]


_validated: dict[tuple[Path, bytes], Params] = {}


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml; errors name the file and the key. Validated once
    per process for each content of the file: the steps' helpers ask for their section
    where they need it, and get the same frozen object until the file changes."""
    try:
        text = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} not found") from exc
    key = (path.resolve(), text)
    if key in _validated:
        return _validated[key]
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    try:
        params = Params.model_validate(raw or {})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_errors(exc)}") from None
    from tasks.core import secrets

    secrets.declare(*params.secret_env_names())  # their values are masked wherever seen
    _validated.clear()  # one content per process is all a run needs
    _validated[key] = params
    return params


def describe_errors(exc: ValidationError) -> str:
    """A validation error as "key.path: problem; ...", the keys as written in params.yaml."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        message = err["msg"].removeprefix("Value error, ")
        # A check across sections has no key of its own: its message starts with the key.
        parts.append(f"{key}: {message}" if key else message)
    return "; ".join(parts)
