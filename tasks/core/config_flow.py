"""The typed shape of params.yaml's `flow` section: the orchestration's settings (retries,
time limits, locks, the schedule, the local Prefect server)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tasks.core.config_sources import _known_timezone, _Strict


class ServeParams(_Strict):
    """`plumber serve` and prefect.yaml: the deployment's name, cron and overlap rule."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_. -]*$")
    cron: str = Field(description="five fields: min hour day month weekday")
    timezone: str = Field(description="The cron's time zone.")
    overlap: Literal["wait", "cancel"] = Field(
        description="a run due while one is running waits, or is cancelled"
    )
    slot_grace_seconds: int = Field(
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

    port: int = Field(ge=1, le=65535, description="another free port if taken")
    start_timeout_seconds: float = Field(
        gt=0, description="a start still not answering after this is an error"
    )
    keep_runs: int = Field(ge=1, description="flow runs kept in its history")
    retention_days: float = Field(ge=1, description="older flow runs are deleted")


class FlowParams(_Strict):
    collect_retries: int = Field(ge=0)
    collect_retry_delay_seconds: float = Field(ge=0, description="doubles after each retry")
    stage_timeout_seconds: dict[str, float] = Field(
        description="per stage (and 'release'); 'default' for the others"
    )
    notify_url_env: str | None = Field(description="variable holding the failure webhook URL")
    notify_timeout_seconds: float = Field(gt=0)
    lock_timeout_seconds: float = Field(
        ge=0, description="wait this long for another run or dvc command"
    )
    server_retries: int = Field(
        ge=0,
        le=8,
        description="a call to the Prefect server is retried this often, waiting 2, 4, 8, "
        "16... s between tries; then the run ends naming the server",
    )
    heartbeat_grace_seconds: float = Field(
        ge=90,
        le=86400,
        description="a flow run without a heartbeat (one every 30 s) this long is Crashed",
    )
    serve: ServeParams
    server: ServerParams

    @field_validator("stage_timeout_seconds")
    @classmethod
    def _positive(cls, limits: dict[str, float]) -> dict[str, float]:
        for stage, seconds in limits.items():
            if seconds <= 0:
                raise ValueError(f"{stage}: a time limit must be above 0 seconds")
        return limits

    def timeout_for(self, stage: str) -> float | None:
        return self.stage_timeout_seconds.get(stage, self.stage_timeout_seconds.get("default"))
