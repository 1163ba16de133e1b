"""The scheduled deployment of the flow, from `flow.serve` in params.yaml.

`plumber serve` serves it from this process; prefect.yaml declares the same deployment
for a work pool (`prefect deploy`), and a test keeps the two in agreement. One run at a
time: a run falling due while another runs waits (`overlap: wait`, Prefect's ENQUEUE) or
is cancelled (`overlap: cancel`, CANCEL_NEW). The slot is a lease the run's process renews:
one whose machine died gives it up after `slot_grace_seconds`, and the next run starts
(it finds the dead one by its record, flows/run_hooks.py, and writes it down Crashed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.core.config import ServeParams
from tasks.core.errors import ConfigError

ENTRYPOINT = "flows/pipeline.py:pipeline"
COLLISION = {"wait": "ENQUEUE", "cancel": "CANCEL_NEW"}


def spec(serve: ServeParams) -> dict[str, Any]:
    """The deployment as prefect.yaml writes it."""
    return {
        "name": serve.name,
        "entrypoint": ENTRYPOINT,
        "schedules": [{"cron": serve.cron, "timezone": serve.timezone}],
        "concurrency_limit": {
            "limit": 1,
            "collision_strategy": COLLISION[serve.overlap],
            "grace_period_seconds": serve.slot_grace_seconds,
        },
    }


def _first_error(exc: ValueError) -> str:
    """pydantic's message without its heading and links: "Invalid cron string: ..." """
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.startswith("  ")]
    return (lines or [str(exc)])[0].removeprefix("Value error, ").split(" [type=")[0]


def build(serve: ServeParams, root: Path) -> Any:
    """The RunnerDeployment `plumber serve` serves."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron

    from flows.pipeline import pipeline

    try:  # Prefect's own check of a cron line (and of its time zone)
        CronSchedule(cron=serve.cron, timezone=serve.timezone)
    except ValueError as exc:
        raise ConfigError(f"flow.serve.cron: {_first_error(exc)}") from None
    limit = spec(serve)["concurrency_limit"]
    return pipeline.to_deployment(
        name=serve.name,
        schedules=[Cron(serve.cron, timezone=serve.timezone)],
        concurrency_limit=ConcurrencyLimitConfig(
            limit=limit["limit"],
            collision_strategy=ConcurrencyLimitStrategy(limit["collision_strategy"]),
            grace_period_seconds=limit["grace_period_seconds"],
        ),
        parameters={"root": str(root)},
        description="collect, validate, retrain when due, release: plumber's pipeline",
        tags=["plumber"],
    )


def serve(serve: ServeParams, root: Path) -> None:
    """Serve until interrupted; scheduled and UI-started runs execute in this machine."""
    from prefect import serve as prefect_serve

    prefect_serve(build(serve, root))
