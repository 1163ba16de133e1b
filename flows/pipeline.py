"""The Prefect flow: every DVC stage as one Prefect task, in the order DVC gives, the
retrain policy after validation, then the release.

In the Prefect UI a stage DVC found unchanged ends in the state "Unchanged", a stage the
retrain policy left out in "Skipped"; both are Completed, neither ran.

Each run first repairs what a killed run left: its own record (var/last_run.json, and the
run's state in Prefect) says crashed, MLflow runs still RUNNING end KILLED, registry
versions left pending are abandoned (`recover`); the retrain policy then finishes stages
a stopped run left undone and judges a candidate no release judged (tasks/ops/retrain.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from prefect import flow
from prefect.states import Cancelled, Completed

from flows import summary
from flows.dvc_waits import wait_for_dvc
from flows.heartbeats import ensure_zombie_detection
from flows.notify import notify_failure
from flows.overrides import Overrides, apply, changes_of
from flows.run_hooks import holding_run, record_end, record_run
from flows.stages import (
    RAN,
    StageFailed,
    StageResult,
)
from flows.steps import (
    AFTER_STAGES,
    POLICY_AFTER,
    _skipped,
    _stage_task,
    publish_data,
    record_candidate,
    recover,
    release_candidate,
    restore_data,
    retrain_policy,
)
from tasks.core import cluster, secrets
from tasks.core.config import FlowParams, Params, load_params
from tasks.core.dvc_internals import stage_order
from tasks.core.errors import ConfigError
from tasks.core.locks import run_lock
from tasks.core.paths import Paths
from tasks.core.profile import profile_path


def check_timeouts(flow_params: FlowParams, stages: list[str]) -> None:
    unknown = set(flow_params.stage_timeout_seconds) - {*stages, *AFTER_STAGES, "default"}
    if unknown:
        raise ConfigError(
            f"flow.stage_timeout_seconds: no stage named {', '.join(sorted(unknown))} "
            f"(stages: {', '.join([*stages, *AFTER_STAGES])}, default)"
        )


def check_root(paths: Paths) -> None:
    """One clear line when the flow runs outside a Plumber checkout (a wrong `root`, or a
    worker whose pull steps left it elsewhere), before anything reads a file there."""
    missing = [name for name in ("params.yaml", "dvc.yaml") if not (paths.root / name).is_file()]
    if missing:
        raise ConfigError(
            f"{paths.root} is not a Plumber checkout (no {' or '.join(missing)}): the flow's "
            "`root` parameter, or the folder a worker's pull steps cloned the project into "
            "(prefect.yaml; PLUMBER_GIT_URL), must be one"
        )


def _info_lines_reach_the_run_log() -> None:
    """Prefect hands its log handlers to these loggers (PREFECT_LOGGING_EXTRA_LOGGERS) but
    not a level, and the root's WARNING would hide the stages' INFO lines from the run's
    logs. Set when a run starts, not on import: importing a module changes nothing."""
    for name in ("flows", "tasks"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)


@flow(
    name="plumber",
    on_completion=[record_run],
    on_failure=[notify_failure, record_run],
    on_crashed=[record_run],
    on_cancellation=[record_run],
    validate_parameters=True,
)
def pipeline(
    root: str = ".",
    force: bool = False,
    overrides: Overrides | None = None,  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Collect, validate, and, when the retrain policy or `force` says so, featurize, train,
    evaluate and release. `overrides`: params.yaml values for this run (kept in the file).

    The run holds var/run.lock throughout, however it was started (CLI, schedule, UI)."""
    from prefect.runtime import flow_run

    from flows.environment import use_project_environment

    secrets.install()  # however the run started: no password or token in its logs
    _info_lines_reach_the_run_log()
    paths = Paths.at(root)
    check_root(paths)
    use_project_environment(paths)  # started by a worker: the stack's profile, the stages' python
    lock_timeout = load_params(paths.params).flow.lock_timeout_seconds
    with run_lock(paths, lock_timeout), holding_run(paths, flow_run) as crashed:
        if crashed:
            logging.getLogger(__name__).warning(
                "the previous flow run %s crashed: %s", crashed["name"], crashed["reason"]
            )
        changed = apply(paths.params, changes_of(overrides))
        params = load_params(paths.params)
        ensure_zombie_detection(params.flow.heartbeat_grace_seconds)
        forced = "plumber run --force" if force else None
        if changed:
            forced = f"parameters overridden ({', '.join(changed)})"
        shared = profile_path() is not None  # a stack: the data's state is in the record
        if shared:
            restore_data(paths.root)
        paths.collect_counts.unlink(missing_ok=True)  # counted afresh by this collection
        recover(paths.root, params.release.model_name, crashed["id"] if crashed else None)
        try:
            results, verdict, outcome = _run_stages(paths, params, str(flow_run.id), forced)
            if shared:
                publish_data(paths.root, str(flow_run.id))
        except StageFailed as exc:
            if exc.cancelled:  # asked from the UI or the API: end as Cancelled, not Failed
                message = f"cancelled during stage {exc.stage}: {exc.error}"
                # Prefect runs no hook for a state the flow returns: record it here.
                record_end(paths, str(flow_run.id), str(flow_run.name), "CANCELLED", message)
                return Cancelled(message=message)  # type: ignore[return-value]  # Prefect's way
            raise
    report = summary.build(
        paths,
        {"id": str(flow_run.id), "name": str(flow_run.name)},
        results,
        verdict,
        outcome,
        changed,
    )
    summary.publish(report, paths)
    name, message, tags = summary.outcome(report)
    _add_tags(str(flow_run.id), tags)
    # The decision in the state itself (Completed still: the run did its work), so a
    # rejected release is seen and filtered for in the UI without opening the summary.
    return Completed(name=name, message=message, data=report)  # type: ignore[return-value]


def _add_tags(flow_run_id: str, tags: list[str]) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        client.update_flow_run(UUID(flow_run_id), tags=sorted({*run.tags, *tags}))


def _run_stages(
    paths: Paths, params: Params, run_id: str, forced: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None]:
    """The stages in DVC's order, the retrain policy after POLICY_AFTER, the release."""
    wait_for_dvc(paths.root, params.flow.lock_timeout_seconds)
    stages = stage_order(paths.root)
    check_timeouts(params.flow, stages)
    governed = stages[stages.index(POLICY_AFTER) + 1 :] if POLICY_AFTER in stages else []
    wait = params.flow.lock_timeout_seconds
    results: list[dict[str, Any]] = []
    verdict: dict[str, Any] | None = None
    # Each step waits for the one before it (`wait_for`): Prefect's run graph then draws
    # the chain collect -> validate -> ... -> release, as `dvc dag` does.
    after: list[Any] = []
    # With compute.workers > 1, one cluster for the run: validate and featurize share it.
    with cluster.for_the_stages(params.compute, paths.var / "dask", root=paths.root):
        for name in stages:
            if verdict is not None and not verdict["retrain"]:
                after = [_skipped(name, after)]
                results.append(dict(after[0].result()))
                continue
            try:
                stage = _stage_task(name, params.flow)
                limit = params.flow.timeout_for(name)
                force = bool(verdict and verdict["forced"])
                state = stage(paths.root, name, run_id, wait, limit, force, wait_for=after,
                              return_state=True)  # fmt: skip
                results.append(state.result())
            except Exception as exc:
                raise StageFailed(name, exc) from exc
            after = [state]
            if name == POLICY_AFTER:
                after = [retrain_policy(paths.root, params, forced, governed, wait_for=after,
                                        return_state=True)]  # fmt: skip
                verdict = after[0].result()
    if verdict is not None and not (verdict["retrain"] or verdict["judge"]):
        for name in AFTER_STAGES:
            after = [_skipped(name, after)]
            results.append(dict(after[0].result()))
        return results, verdict, None
    recorded, seconds, after = _after_stage(record_candidate, "record", paths, params, run_id,
                                            after)  # fmt: skip
    where = summary.shown_location(recorded["remote"]["url"], paths.root)
    results.append(asdict(StageResult("record", RAN, seconds, note=where)))
    outcome, seconds, _ = _after_stage(release_candidate, "release", paths, params, run_id, after)
    results.append(asdict(StageResult("release", RAN, seconds, note=outcome["decision"])))
    return results, verdict, outcome


def _after_stage(
    step: Any, name: str, paths: Paths, params: Params, run_id: str, after: list[Any]
) -> tuple[dict[str, Any], float, list[Any]]:
    """One of AFTER_STAGES as its task, with its timeout, after `after`; its result, its
    seconds, and its state (for the next step to wait for)."""
    started = time.perf_counter()
    try:
        state = step.with_options(timeout_seconds=params.flow.timeout_for(name))(
            paths.root, run_id, wait_for=after, return_state=True
        )
        result = state.result()
    except Exception as exc:
        raise StageFailed(name, exc) from exc
    return result, round(time.perf_counter() - started, 3), [state]
