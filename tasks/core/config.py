"""The typed shape of params.yaml.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key is an
error that names it. The same models type the Prefect flow's parameters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.core.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


def _known_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {tz!r}") from exc
    return tz


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SourceBase(_Strict):
    enabled: bool = True
    key: list[str] = Field(min_length=1, description="Columns that identify a row (natural key).")
    watermark: str | None = Field(
        default=None, description="Column that grows as rows are added or updated at the source."
    )
    partition_by: str | None = Field(
        default=None, description="Timestamp column whose local day names the partition."
    )
    schema_name: str = Field(
        alias="schema", description="The pandera schema in tasks/data/schemas.py."
    )

    @model_validator(mode="after")
    def _partitioned_needs_watermark(self) -> _SourceBase:
        if self.partition_by and not self.watermark:
            raise ValueError("a source with partition_by needs a watermark column")
        return self


class SqlSource(_SourceBase):
    kind: Literal["sql"]
    url_env: str = Field(description="Environment variable holding the SQLAlchemy URL.")
    default_url: str | None = Field(
        default=None, description="URL used when url_env is unset; must hold no password."
    )
    table: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if not self.watermark:
            raise ValueError("a sql source needs a watermark column")
        return self

    @field_validator("default_url")
    @classmethod
    def _no_password_in_params(cls, url: str | None) -> str | None:
        if url is not None:
            from urllib.parse import urlsplit  # what SQLAlchemy URLs are made of, lighter

            if urlsplit(url).password:
                raise ValueError(
                    "holds a password: put the URL in the environment variable url_env"
                )
        return url

    def resolve_url(self, root: Path | None = None) -> str:
        """The URL from url_env, else default_url; a relative SQLite path is taken
        relative to ``root`` (the project root), wherever the command runs from."""
        url = os.environ.get(self.url_env) or self.default_url
        if not url:
            raise ConfigError(
                f"environment variable {self.url_env} is not set (and no default_url)"
            )
        sqlite_file = url.removeprefix("sqlite:///")
        if root is not None and url.startswith("sqlite:///") and not sqlite_file.startswith("/"):
            return f"sqlite:///{root / sqlite_file}"
        return url


class FilesSource(_SourceBase):
    kind: Literal["files"]
    path: Path
    path_env: str | None = Field(
        default=None,
        description="Environment variable that, when set, names the folder instead of path "
        "(a folder every worker reaches, when runs execute on other machines).",
    )
    glob: str
    on_bad_file: Literal["fail", "skip"] = Field(
        default="fail",
        description="An unreadable file stops collection ('fail') or is left for the next run "
        "and listed in the manifest ('skip').",
    )

    def folder(self) -> Path:
        """The folder from path_env when set, else path (relative: to the project root)."""
        value = os.environ.get(self.path_env) if self.path_env else None
        return Path(value) if value else self.path


class HttpSource(_SourceBase):
    kind: Literal["http"]
    url: str
    token_env: str | None = Field(default=None, description="Variable with a bearer token.")
    since_param: str = "since"
    limit_param: str = "limit"
    items_field: str = "items"
    next_field: str = "next"
    timeout_seconds: float = Field(default=10, gt=0)
    max_retries: int = Field(default=5, ge=0)
    backoff_seconds: float = Field(default=0.5, ge=0)
    max_backoff_seconds: float = Field(default=30, gt=0)


Source = Annotated[SqlSource | FilesSource | HttpSource, Field(discriminator="kind")]


class CollectParams(_Strict):
    timezone: str = Field(description="The local time zone that names a partition's day.")
    chunk_rows: int = Field(default=50_000, gt=0)
    sources: dict[str, Source]

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        return _known_timezone(tz)

    @field_validator("sources")
    @classmethod
    def _safe_names(cls, sources: dict[str, Source]) -> dict[str, Source]:
        for name in sources:
            if not name.replace("_", "").isalnum():
                raise ValueError(f"source name {name!r}: use letters, digits and '_' only")
        return sources

    def enabled_sources(self) -> dict[str, Source]:
        return {name: src for name, src in self.sources.items() if src.enabled}


class ValidateParams(_Strict):
    max_reject_rate: float = Field(default=0.05, ge=0, le=1)
    extra_airport_codes: list[str] = Field(
        description="Valid airports missing from the reference file."
    )
    max_clock_skew_hours: float = Field(default=24, ge=0)
    batch_rows: int = Field(default=200_000, gt=0, description="Rows checked at once (memory).")


class FeaturizeParams(_Strict):
    delay_minutes: float = Field(
        default=15, gt=0, description="The label: departed this late or later, or cancelled."
    )
    history_gap_minutes: float = Field(
        default=30, ge=0, description="Other flights count only if known this long before."
    )
    recent_minutes: float = Field(
        default=120, gt=0, description="The window of the recent delay rate at the origin."
    )
    plane_legs_back: int = Field(
        default=3, ge=1, description="Earlier legs searched for the plane's last departure."
    )
    test_days: int = Field(default=21, ge=1)
    valid_days: int = Field(default=14, ge=1)
    train_max_days: int | None = Field(default=None, ge=1)
    min_category_count: int = Field(default=20, ge=1, description="Rarer values are 'unknown'.")
    batch_rows: int = Field(default=200_000, gt=0, description="Flights built at once (memory).")


class TrainParams(_Strict):
    seed: int = 42
    threads: int = Field(default=2, ge=1, description="torch threads; fixed for determinism")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    patience: int = Field(default=4, ge=1, description="epochs without a better valid PR-AUC")
    hidden: list[int] = Field(default=[128, 64], min_length=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    max_embedding_dim: int = Field(default=8, ge=1)
    members: int = Field(default=8, ge=1, description="networks in the ensemble")


class EvaluateParams(_Strict):
    min_precision: float = Field(default=0.6, gt=0, lt=1, description="the service requirement")
    top_carriers: int = Field(default=5, ge=1, description="carriers with their own slice")
    calibration_bins: int = Field(default=10, ge=2)


class ReleaseParams(_Strict):
    model_name: str = Field(default="flight-delay", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # Absolute floors on the test window.
    min_recall_at_precision: float = Field(default=0.5, ge=0, le=1)
    min_pr_auc: float = Field(default=0.5, ge=0, le=1)
    # Lift over the baselines on the service metric.
    min_lift_over_majority: float = Field(default=0.3, ge=-1, le=1)
    min_lift_over_logistic_regression: float = Field(default=0.0, ge=-1, le=1)
    # Against the champion, re-scored on the candidate's test rows.
    max_regression: float = Field(default=0.02, ge=0, le=1)
    min_improvement: float = Field(default=0.005, ge=0, le=1)
    # Each origin airport's service metric at least this fraction of the overall.
    min_slice_fraction: float = Field(default=0.8, ge=0, le=1)
    max_p99_latency_ms: float = Field(default=50.0, gt=0)
    max_model_mb: float = Field(default=25.0, gt=0)
    # A candidate whose record is incomplete or whose data the DVC remote lacks is rejected.
    require_reproducible: bool = True
    smoke_rows: int = Field(default=2000, ge=1, description="test rows the smoke test predicts")
    smoke_tolerance: float = Field(default=1e-6, gt=0, description="vs evaluate's predictions")
    smoke_timeout_seconds: float = Field(default=600, gt=0)
    latency_samples: int = Field(default=300, ge=10)
    latency_rounds: int = Field(default=3, ge=1, description="the best round's p99 is judged")
    lock_timeout_seconds: float = Field(default=600, ge=0)


class ServeParams(_Strict):
    """`plumber serve` and prefect.yaml: the deployment's name, cron and overlap rule."""

    name: str = Field(default="plumber-daily", pattern=r"^[A-Za-z0-9][A-Za-z0-9_. -]*$")
    cron: str = Field(default="0 6 * * *", description="five fields: min hour day month weekday")
    timezone: str = Field(default="America/New_York", description="The cron's time zone.")
    overlap: Literal["wait", "cancel"] = Field(
        default="wait", description="a run due while one is running waits, or is cancelled"
    )
    slot_grace_seconds: int = Field(
        default=120,
        ge=60,  # Prefect's own floor
        le=86400,
        description="a run whose machine died holds the deployment's one slot this long",
    )

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        if len(cron.split()) != 5:
            raise ValueError(f"{cron!r} is not a cron line of five fields")
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        return _known_timezone(tz)


class ServerParams(_Strict):
    """The local Prefect server that `plumber` starts when PREFECT_API_URL is unset."""

    port: int = Field(default=4200, ge=1, le=65535, description="another free port if taken")
    start_timeout_seconds: float = Field(
        default=900, gt=0, description="a start still not answering after this is an error"
    )
    keep_runs: int = Field(default=200, ge=1, description="flow runs kept in its history")
    retention_days: float = Field(default=30, ge=1, description="older flow runs are deleted")


class FlowParams(_Strict):
    collect_retries: int = Field(default=2, ge=0)
    collect_retry_delay_seconds: float = Field(
        default=10, ge=0, description="doubles after each retry"
    )
    stage_timeout_seconds: dict[str, float] = Field(
        default={"default": 1800, "train": 7200},
        description="per stage (and 'release'); 'default' for the others",
    )
    notify_url_env: str | None = Field(
        default="PLUMBER_NOTIFY_URL", description="variable holding the failure webhook URL"
    )
    notify_timeout_seconds: float = Field(default=5, gt=0)
    lock_timeout_seconds: float = Field(
        default=600, ge=0, description="wait this long for another run or dvc command"
    )
    server_retries: int = Field(
        default=4, ge=0, le=8,
        description="a call to the Prefect server is retried this often, waiting 2, 4, 8, "
        "16... s between tries; then the run ends naming the server",
    )  # fmt: skip
    heartbeat_grace_seconds: float = Field(
        default=600, ge=90, le=86400,
        description="a flow run without a heartbeat (one every 30 s) this long is Crashed",
    )  # fmt: skip
    serve: ServeParams = Field(default_factory=ServeParams)
    server: ServerParams = Field(default_factory=ServerParams)

    @field_validator("stage_timeout_seconds")
    @classmethod
    def _positive(cls, limits: dict[str, float]) -> dict[str, float]:
        for stage, seconds in limits.items():
            if seconds <= 0:
                raise ValueError(f"{stage}: a time limit must be above 0 seconds")
        return limits

    def timeout_for(self, stage: str) -> float | None:
        return self.stage_timeout_seconds.get(stage, self.stage_timeout_seconds.get("default"))


class RetrainWhen(_Strict):
    """A run retrains when either holds (or with --force); otherwise it stops after
    validation with "no retrain needed"."""

    source: str = Field(
        default="flights", description="the collect source whose new rows count (by day)"
    )
    new_rows: int = Field(
        default=500, ge=1, description="validated rows of `source` newer than the last training's"
    )
    days_since_training: float = Field(default=7, gt=0)


class TrackingParams(_Strict):
    """Where runs go, and how long MLflow may take to answer before a step fails naming
    the tracking server."""

    experiment: str = Field(default="plumber", min_length=1, description="of every run")
    connect_timeout_seconds: float = Field(default=10, gt=0)
    connect_attempts: int = Field(default=3, ge=1, description="of the start-up check")
    request_timeout_seconds: float = Field(default=60, gt=0, description="each MLflow call")
    request_retries: int = Field(default=2, ge=0, description="of each MLflow call")


class LineageParams(_Strict):
    """Each candidate's record (tasks/lineage/record.py) and where its data goes."""

    remote: str = Field(default="", description="DVC remote name; empty: core.remote")
    push_attempts: int = Field(default=3, ge=1, description="of dvc push, on failure")
    push_retry_delay_seconds: float = Field(default=5, ge=0, description="doubling")
    push_timeout_seconds: float = Field(default=1800, gt=0, description="one dvc push")
    data_branch: str = Field(default="plumber/data", description="empty: no data commits")

    @field_validator("data_branch")
    @classmethod
    def _branch_name(cls, name: str) -> str:
        if name and (name.startswith(("-", "/")) or ".." in name or " " in name):
            raise ValueError(f"{name!r} is not a git branch name")
        return name


class ScheduleParams(_Strict):
    retrain_when: RetrainWhen = Field(default_factory=RetrainWhen)


class ComputeParams(_Strict):
    workers: int = Field(
        default=1, ge=1, description="1: in the step's process; more: a local Dask cluster"
    )
    address_env: str = Field(
        default="PLUMBER_DASK_ADDRESS", description="The variable naming a Dask scheduler."
    )
    connect_timeout_seconds: float = Field(default=30, gt=0)
    in_flight: int = Field(
        default=2, ge=1, description="Batches queued per worker (bounds the step's memory)."
    )


class Params(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)

    collect: CollectParams
    validate_: ValidateParams = Field(alias="validate")
    featurize: FeaturizeParams = Field(default_factory=FeaturizeParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    release: ReleaseParams = Field(default_factory=ReleaseParams)
    flow: FlowParams = Field(default_factory=FlowParams)
    schedule: ScheduleParams = Field(default_factory=ScheduleParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    lineage: LineageParams = Field(default_factory=LineageParams)
    compute: ComputeParams = Field(default_factory=ComputeParams)

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
