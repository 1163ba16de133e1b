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

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled, Completed

from flows import summary
from flows.dvc_waits import holding_dvc, wait_for_dvc
from flows.heartbeats import ensure_zombie_detection
from flows.notify import notify_failure
from flows.overrides import Overrides, apply, changes_of
from flows.run_hooks import holding_run, record_end, record_run
from flows.stages import (
    RAN,
    SKIPPED,
    UNCHANGED,
    StageFailed,
    StageResult,
    reproduce_stage,
)
from tasks.core import cluster, secrets
from tasks.core.config import FlowParams, Params, load_params
from tasks.core.dvc_internals import stage_order
from tasks.core.errors import Busy, ConfigError, DiskFull, StepError
from tasks.core.locks import run_lock
from tasks.core.paths import Paths
from tasks.core.profile import profile_path
from tasks.core.tracking import artifact_store_down
from tasks.ops import retrain

P = ParamSpec("P")
R = TypeVar("R")

# The retrain policy is asked once this stage has run: the stages after it build features,
# train and evaluate, and are left out when no retrain is needed.
POLICY_AFTER = "validate"
# The flow's steps after the DVC stages, for a candidate: its record, then the release.
AFTER_STAGES = ("record", "release")


def masking(fn: Callable[P, R]) -> Callable[P, R]:
    """A task's exception with URL passwords and tokens masked: Prefect stores its message
    as the task's state message, in its database."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            problem = artifact_store_down(exc)  # one line naming the store, not MLflow's port
            raise secrets.masked_error(StepError(problem) if problem else exc) from None

    return run


@task(cache_policy=NO_CACHE, persist_result=False)
@masking
def run_stage(
    root: Path,
    name: str,
    flow_run_id: str,
    lock_timeout: float,
    timeout: float | None,
    force: bool = False,
) -> Any:
    result = reproduce_stage(root, name, flow_run_id, lock_timeout, timeout, force=force)
    if result.outcome == UNCHANGED:
        message = "unchanged since dvc.lock: DVC skipped it"
        # The word the CLI and the run summary use too (flows/stages.py: ran, unchanged, skipped).
        return Completed(name="Unchanged", message=message, data=asdict(result))
    return asdict(result)


@task(cache_policy=NO_CACHE, persist_result=False)
def skip_stage(name: str, reason: str) -> Any:
    result = StageResult(name, SKIPPED, 0.0, note=reason)
    return Completed(name="Skipped", message=reason, data=asdict(result))


@task(
    name="retrain-policy",
    task_run_name="retrain-policy",
    cache_policy=NO_CACHE,
    persist_result=False,
)
@masking
def retrain_policy(
    root: Path, params: Params, force: str | None, stages: list[str]
) -> dict[str, Any]:
    with holding_dvc(root, params.flow.lock_timeout_seconds):  # it reads dvc.lock
        verdict = retrain.verdict(
            params.schedule.retrain_when, Paths.at(root), force, stages=stages
        )
    logging.getLogger(__name__).info("%s", retrain.describe(verdict))
    return asdict(verdict)


@task(name="recover", task_run_name="recover", cache_policy=NO_CACHE, persist_result=False)
@masking
def recover(root: Path, model_name: str, crashed_flow_run: str | None) -> list[str]:
    """What killed operations left in MLflow, repaired (asks MLflow only if there is any);
    `crashed_flow_run`: a flow run found dead, whose MLflow runs end KILLED wherever it ran."""
    from tasks.release import recovery

    paths = Paths.at(root)
    if not (recovery.needed(paths) or crashed_flow_run):
        return []
    return recovery.recover(paths, model_name, crashed_flow_run=crashed_flow_run)


@task(name="record", task_run_name="record", cache_policy=NO_CACHE, persist_result=False)
@masking
def record_candidate(root: Path, flow_run_id: str) -> dict[str, Any]:
    """Every stage's data pushed to the DVC remote, and the candidate's record written to
    its MLflow run (tasks/lineage/record.py): what `plumber reproduce` rebuilds it from."""
    from tasks.core.io import read_json, require
    from tasks.lineage import record

    paths = Paths.at(root)
    params = load_params(paths.params)
    wait_for_dvc(root, params.flow.lock_timeout_seconds)
    run_id = read_json(require(paths.train_record, "train"))["run_id"]
    return record.publish(paths, params, run_id, flow_run_id)


@task(name="restore", task_run_name="restore", cache_policy=NO_CACHE, persist_result=False)
@masking
def restore_data(root: Path) -> str:
    """On a stack: the latest data version from the shared record, into this checkout
    (tasks/lineage/data_versions.py), so the run continues from any machine's last run."""
    from tasks.lineage import data_versions

    paths = Paths.at(root)
    params = load_params(paths.params)
    wait_for_dvc(root, params.flow.lock_timeout_seconds)
    return data_versions.restore(paths, params)


@task(
    name="data-version", task_run_name="data-version", cache_policy=NO_CACHE, persist_result=False
)
@masking
def publish_data(root: Path, flow_run_id: str) -> dict[str, Any]:
    """On a stack: the data this run leaves pushed and recorded as the next data version."""
    from tasks.lineage import data_versions

    paths = Paths.at(root)
    params = load_params(paths.params)
    wait_for_dvc(root, params.flow.lock_timeout_seconds)
    return data_versions.publish(paths, params, flow_run_id)


@task(name="release", task_run_name="release", cache_policy=NO_CACHE, persist_result=False)
@masking
def release_candidate(root: Path, flow_run_id: str) -> dict[str, Any]:
    """The gate and the registry, after the stages: its side effects stay out of DVC."""
    from tasks.release import run as release

    paths = Paths.at(root)
    return release.run(load_params(paths.params), paths, flow_run_id=flow_run_id).to_json()


def _skipped(name: str, after: list[Any], reason: str = "no retrain needed") -> Any:
    """The state of a step the retrain policy left out, after the steps in `after`."""
    skip: Any = skip_stage.with_options(name=name, task_run_name=name)
    return skip(name, reason, wait_for=after, return_state=True)


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    # Busy already waited flow.lock_timeout_seconds for the other process: say so now. A
    # full disk stays full: retrying would only fill it again.
    return not isinstance(state.result(raise_on_failure=False), Busy | DiskFull)


def _stage_task(name: str, flow_params: FlowParams) -> Any:
    # Collection talks to other systems, so it alone is retried, with a doubling delay;
    # the other stages are deterministic and would fail the same way again.
    retries = flow_params.collect_retries if name == "collect" else 0
    delay = flow_params.collect_retry_delay_seconds
    return run_stage.with_options(
        name=name,
        task_run_name=name,
        retries=retries,
        retry_delay_seconds=[delay * 2**i for i in range(retries)] or 0,
        retry_condition_fn=_worth_retrying,
    )


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
