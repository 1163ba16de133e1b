"""The flow under Prefect's test harness, on a few demo days in a copy of this repository:
the first run trains and releases; a run with no new data skips featurize, train and
evaluate; after `demo advance` a run retrains; a failure injected in a stage fails the run
naming it and leaves the data version, the champion and the watermarks as they were."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import copy_repo, small_demo_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, harness: None) -> Path:
    dest = copy_repo(tmp_path_factory.mktemp("flow"))
    small_demo_params(
        dest,
        schedule={"retrain_when": {"new_rows": 500, "days_since_training": 7}},
        # Two days of training data make a weak model: here the gate checks only budgets.
        release={"min_recall_at_precision": 0, "min_pr_auc": 0, "min_lift_over_majority": -1,
                 "min_lift_over_logistic_regression": -1, "min_slice_fraction": 0},
    )  # fmt: skip
    plumber(dest, "demo", "init", "--now", "2013-01-04")
    return dest


def plumber(root: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([Path(sys.executable).parent / "plumber", "--root", str(root), *args],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_flow(root: Path, **parameters: Any) -> tuple[Any, dict[str, str]]:
    """One flow run; its final state and the state name of each of its task runs."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from flows.pipeline import pipeline

    state = pipeline(root=str(root), return_state=True, **parameters)
    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    # Task runs report their states to the server as events, stored a moment later: read
    # until two reads 0.5 s apart agree.
    seen: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for _ in range(60):
            runs = client.read_task_runs(flow_run_filter=this_run, limit=100,
                                         sort=TaskRunSort.EXPECTED_START_TIME_ASC)  # fmt: skip
            now = {run.name: run.state.name for run in runs if run.state}
            if now == seen and all(run.state and run.state.is_final() for run in runs):
                break
            seen = now
            time.sleep(0.5)
    return state, seen


def waited_for(state: Any) -> dict[str, list[str]]:
    """Per task run of the flow run, the task runs it waited for (its graph edges)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=this_run, limit=100)
    names = {str(run.id): run.name for run in runs}
    return {run.name: sorted(names[str(parent.id)] for parent in run.task_inputs.get("wait_for", []))
            for run in runs}  # fmt: skip


def flow_run_tags(state: Any) -> list[str]:
    """The tags of the flow run that ended in `state`, as the server has them."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return list(client.read_flow_run(state.state_details.flow_run_id).tags)


def facts(root: Path) -> dict[str, Any]:
    """What a failed run must leave alone."""
    st = json.loads(plumber(root, "status", "--json"))
    return {"watermarks": st["watermarks"], "champion": st["champion"],
            "dvc.lock": (root / "dvc.lock").read_text(),
            "model": (root / "models/model.pt").read_bytes()}  # fmt: skip


def test_the_first_run_trains_and_releases(repo: Path) -> None:
    state, tasks = run_flow(repo)
    assert state.is_completed()
    report = state.result()
    assert {s["stage"]: s["outcome"] for s in report["stages"]} == dict.fromkeys(
        ["collect", "validate", "featurize", "train", "evaluate", "record", "release"], "ran"
    )
    assert report["retrain"] == {
        "retrain": True,
        "reason": "no trained model yet",
        "forced": False,
        "judge": False,
    }
    assert report["release"]["decision"] == "released"
    assert state.name == "Released" and state.message.startswith("candidate version 1 released")
    assert {"decision:released", "candidate:1"} <= set(flow_run_tags(state))
    # The first collection reads every row and all of them are new.
    assert report["rows"]["new"]["flights"] == report["rows"]["read"]["flights"] == 842 + 943 + 914
    assert set(tasks.values()) == {"Completed"} and "release" in tasks
    # The server holds Prefect's zombie detection for our flows (flows/heartbeats.py).
    from prefect import get_client

    from flows import heartbeats

    with get_client(sync_client=True) as client:
        [zombies] = client.read_automations_by_name(heartbeats.NAME)
    held = zombies.model_dump(mode="json")
    assert held["enabled"] and held["trigger"]["within"] == 600.0, held["trigger"]
    assert [(a["type"], a["state"]) for a in held["actions"]] == [
        ("change-flow-run-state", "CRASHED")
    ]
    # The run graph draws the chain, as `dvc dag` does: each step waits for the one before.
    chain = ["collect", "validate", "retrain-policy", "featurize", "train", "evaluate",
             "record", "release"]  # fmt: skip
    waits = waited_for(state)
    assert {step: waits[step] for step in chain[1:]} == {
        step: [before] for before, step in itertools.pairwise(chain)
    }, waits

    from prefect import get_client

    # The REST call itself: this client's filter models, when empty, match no artifact.
    query = {"artifacts": {"key": {"any_": ["plumber-run-summary"]}}, "limit": 50}
    with get_client(sync_client=True) as client:
        artifacts = client.request("POST", "/artifacts/filter", json=query).json()
    this_run = str(state.state_details.flow_run_id)
    [artifact] = [a for a in artifacts if a["flow_run_id"] == this_run]
    assert artifact["type"] == "markdown"
    assert "| train | ran |" in artifact["data"]
    assert "released, candidate version 1" in artifact["data"]
    assert (repo / "var/last_summary.md").read_text() == artifact["data"]  # also on disk


def test_a_run_without_new_data_skips_featurize_train_and_evaluate(repo: Path) -> None:
    state, tasks = run_flow(repo)
    assert state.is_completed()
    assert tasks["collect"] == "Completed" and tasks["validate"] == "Unchanged"
    skipped = ("featurize", "train", "evaluate", "record", "release")
    assert [tasks[s] for s in skipped] == ["Skipped"] * 5
    report = state.result()
    assert report["release"] is None
    assert report["retrain"]["reason"].startswith("0 new rows since 2013-01-03")
    assert state.name == "No retrain" and state.message == report["retrain"]["reason"]
    assert "decision:no-retrain" in flow_run_tags(state)
    # `plumber status` names the run's decision, as Prefect's UI does, not COMPLETED.
    [line] = [x for x in plumber(repo, "status").splitlines() if x.startswith("last run:")]
    assert " No retrain at " in line and "COMPLETED" not in line, line


def test_after_a_new_day_the_run_retrains(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On a cluster of two workers the run starts for its stages (compute.workers: 2)."""
    from tests.factories import processes_matching

    plumber(repo, "demo", "advance", "--days", "1")
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("\n  workers: 1\n", "\n  workers: 2\n"))
    try:
        with caplog.at_level(logging.INFO):
            state, tasks = run_flow(repo)
    finally:
        (repo / "params.yaml").write_text(params)
    assert state.is_completed()
    [started] = [r.getMessage() for r in caplog.records if r.name == "tasks.core.cluster"]
    address = started.split(" at ")[1].split()[0]
    assert started == f"compute: a cluster of 2 workers at {address} for this run's stages"
    for stage in ("validate", "featurize"):  # both sent their batches to it
        lines = [r.getMessage() for r in caplog.records if r.name == f"flows.stage.{stage}"]
        assert f"tasks.core.compute: compute: scheduler {address} (2 workers)" in lines, lines
    assert not (repo / "var/dask").exists() and not processes_matching(str(repo / "var/dask"))
    report = state.result()
    assert (
        report["retrain"]["retrain"] and "new rows since 2013-01-03" in report["retrain"]["reason"]
    )
    assert [tasks[s] for s in ("featurize", "train", "evaluate", "release")] == ["Completed"] * 4
    assert report["release"]["version"] == "2"


def test_a_failing_stage_fails_the_run_and_changes_nothing(repo: Path) -> None:
    from flows.stages import StageFailed

    params_before = (repo / "params.yaml").read_text()
    before = facts(repo)
    try:  # a device that does not exist: the train stage fails, after collect and validate
        state, tasks = run_flow(repo, overrides={"train": {"device": "cuda:7"}})
    finally:
        (repo / "params.yaml").write_text(params_before)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, StageFailed) and error.stage == "train"
    assert "train.device is cuda:7" in error.error
    assert tasks["train"] == "Failed" and "evaluate" not in tasks
    after = facts(repo)
    assert after["watermarks"] == before["watermarks"]
    assert after["champion"] == before["champion"]
    assert after["model"] == before["model"]
    assert after["dvc.lock"] == before["dvc.lock"]  # no stage recorded a new version
