"""The Prefect flow: every DVC stage as one Prefect task, in the order DVC gives."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.notify import notify_failure
from flows.run_record import record_run
from flows.stages import StageFailed, StageResult, reproduce_stage, stage_order
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


@task(name="release", task_run_name="release")
def release_candidate(root: Path, flow_run_id: str) -> dict[str, Any]:
    """The gate and the registry, after the stages: its side effects stay out of DVC."""
    from tasks import release

    paths = Paths.at(root)
    return release.run(load_params(paths.params), paths, flow_run_id=flow_run_id).to_json()


@flow(
    name="plumber",
    on_completion=[record_run],
    on_failure=[notify_failure, record_run],
)
def pipeline(root: str = ".") -> dict[str, Any]:
    """Run the DVC stages (DVC skips those whose inputs did not change), then release."""
    from prefect.runtime import flow_run

    paths = Paths.at(root)
    params = load_params(paths.params)
    results: list[StageResult] = []
    for name in stage_order(paths.root):
        try:
            stage = _stage_task(name, params)
            run_id, wait = str(flow_run.id), params.flow.lock_timeout_seconds
            results.append(stage(Path(paths.root), name, run_id, wait))
        except Exception as exc:
            raise StageFailed(name, exc) from exc
    outcome = release_candidate(Path(paths.root), str(flow_run.id))
    return {"stages": [asdict(r) for r in results], "release": outcome}
