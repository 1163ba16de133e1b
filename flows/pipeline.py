"""The Prefect flow: every DVC stage as one Prefect task, in the order DVC gives."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.stages import StageResult, reproduce_stage, stage_order
from tasks.config import Params, load_params
from tasks.paths import Paths


def _stage_task(name: str, params: Params) -> Any:
    # Collection talks to other systems, so it alone is retried; the other stages
    # are deterministic and would fail the same way again.
    retries = params.flow.collect_retries if name == "collect" else 0
    return task(
        name=name,
        task_run_name=f"dvc-stage-{name}",
        retries=retries,
        retry_delay_seconds=params.flow.collect_retry_delay_seconds,
    )(reproduce_stage)


@flow(name="plumber")
def pipeline(root: str = ".") -> list[dict[str, Any]]:
    """Run the DVC stages; DVC skips those whose inputs did not change."""
    from prefect.runtime import flow_run

    paths = Paths.at(root)
    params = load_params(paths.params)
    results: list[StageResult] = []
    for name in stage_order(paths.root):
        results.append(_stage_task(name, params)(Path(paths.root), name, str(flow_run.id)))
    return [asdict(r) for r in results]
