"""The flow's tasks: each DVC stage through `dvc repro`, the retrain policy, the repair of
what a killed run left, and the steps after the stages for a candidate (its record, its
data version on a stack, the release). flows/pipeline.py runs them in order."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from flows.dvc_waits import holding_dvc, wait_for_dvc
from flows.stages import (
    SKIPPED,
    UNCHANGED,
    StageResult,
    reproduce_stage,
)
from tasks.core import secrets
from tasks.core.config import FlowParams, Params, load_params
from tasks.core.errors import Busy, DiskFull, StepError
from tasks.core.paths import Paths
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
