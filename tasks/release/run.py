"""Release: package the trained candidate, smoke-test it, gate it, and move `champion`.

    plumber release [--force --reason TEXT]      (and the flow's last step)

Steps, in order; the alias move is the only step that changes what is served:

    1. lock        one release or rollback at a time (var/release.lock)
    2. reconcile   repair what a killed release left (tasks/release/registry.py)
    3. package     the pyfunc model, saved under var/release/ and logged to the training run
    4. register    a new version of `release.model_name`, decision "pending"
    5. smoke       a fresh process loads it by registry URI and must reproduce evaluate's
                   predictions within 1e-6; latency measured there
    6. gate        the champion re-scored on the candidate's test days it never saw;
                   tasks/release/gate.py decides; the version is tagged with the evidence
    7. promote     on "released" only: `champion` moves, and the history records it

Killed anywhere, `champion` still points at a fully registered, smoke-tested version, and
the next release repairs the leftovers and runs normally.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core import journal, tracking
from tasks.core.config import Params
from tasks.core.errors import StepError
from tasks.core.guard import run_guarded
from tasks.core.io import read_json, require, write_json
from tasks.core.paths import Paths
from tasks.ml.features import LABEL
from tasks.ml.metrics import REPORTED, metric_block
from tasks.release import recovery, registry
from tasks.release.gate import METRIC, NO_CHANGE, REJECTED, Decision, Evidence, decide
from tasks.release.packaging import size_mb

log = logging.getLogger(__name__)

# Tests set this to a step name to kill the release right there (see tests/test_release.py).
FAULT_ENV = "PLUMBER_RELEASE_FAULT_AT"


@dataclass
class Outcome:
    decision: str
    reasons: list[str]
    version: str | None
    champion_before: str | None
    champion_after: str | None
    forced: bool = False
    repaired: list[str] = field(default_factory=list)
    # The gate's evidence in short: candidate, champion and candidate on the champion's rows.
    compared: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _step(name: str) -> None:
    log.info("release: %s", name)
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def locked(paths: Paths, timeout: float) -> Iterator[None]:
    """One release or rollback at a time (tasks/core/locks.py): an OS file lock that dies with
    its holder; a second one waits, saying for whom, then fails naming the lock."""
    from tasks.core.locks import exclusive

    with exclusive(
        paths.var / "release.lock", timeout=timeout, what="a release or rollback",
        setting="release.lock_timeout_seconds",
    ):  # fmt: skip
        yield


def run(
    params: Params,
    paths: Paths,
    force: bool = False,
    reason: str = "",
    flow_run_id: str | None = None,
) -> Outcome:
    """Release the trained candidate; `flow_run_id`: the Prefect flow run doing it."""
    policy, name = params.release, params.release.model_name
    flow_run_id = flow_run_id or os.environ.get(tracking.FLOW_RUN_ENV)
    if force and not reason.strip():
        raise StepError("a forced release needs --reason")
    train = read_json(require(paths.models / "train.json", "train"))
    metrics = read_json(require(paths.reports / "metrics.json", "evaluate"))
    run_id = train["run_id"]
    with locked(paths, policy.lock_timeout_seconds), journal.intent(paths, "release") as entry:
        _step("lock")
        client = registry.connect(paths)
        repaired = recovery.recover(paths, name, client)
        outcome = _judge(params, paths, client, train, metrics, force, reason, flow_run_id, entry)
        outcome.repaired = repaired + outcome.repaired
    write_json(paths.judged, {"run_id": run_id, "version": outcome.version,
                              "decision": outcome.decision})  # fmt: skip
    return outcome


def _judge(
    params: Params,
    paths: Paths,
    client: Any,
    train: dict[str, Any],
    metrics: dict[str, Any],
    force: bool,
    reason: str,
    flow_run_id: str | None,
    entry: journal.Intent,
) -> Outcome:
    """Steps 3-7 for the candidate of `train`, under the release lock."""
    policy, name, run_id = params.release, params.release.model_name, train["run_id"]
    before = registry.champion(client, name)
    was = registry.number(before)
    unfinished = (registry.PENDING, registry.ABANDONED)
    decided = [
        v
        for v in registry.versions_of_run(client, name, run_id)
        if v.tags.get("decision") not in unfinished
    ]
    if decided and not force:
        latest = max(decided, key=lambda v: int(v.version))
        return Outcome(
            latest.tags["decision"],
            [f"this training (run {run_id}) was already judged as version {latest.version}: "
             "train a new candidate, or use --force"],
            str(latest.version), was, was,
        )  # fmt: skip

    _step("package")
    test = scored_test_rows(paths)
    packaged = _package(paths, params, metrics["threshold"], test)
    size = size_mb(packaged)
    artifact_path = f"release/{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"
    client.log_artifacts(run_id, str(packaged), artifact_path)

    _step("register")
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    version = client.create_model_version(
        name, source, run_id=run_id, tags={"decision": registry.PENDING}
    ).version
    version = str(version)
    entry.note(version=version)

    _step("smoke")
    try:
        smoke = _smoke_test(paths, params, f"models:/{name}/{version}", test)
    except StepError as exc:
        client.set_model_version_tag(name, version, "decision", REJECTED)
        client.set_model_version_tag(name, version, "reasons", registry.clip([str(exc)]))
        return Outcome(REJECTED, [str(exc)], version, was, was)

    _step("gate")
    evidence = _evidence(params, metrics, smoke, size, before, test)
    decision = decide(evidence, policy, force=force)
    _tag_version(
        client, params, version, run_id, train, decision, evidence, smoke, reason, flow_run_id
    )
    client.update_model_version(
        name,
        version,
        description=model_card(version, train, evidence, decision, metrics, params),
    )
    compared = {  # the candidate on its whole test window, then both on the same rows
        "candidate": _short(evidence.candidate),
        "champion (same rows)": _short(evidence.champion),
        "candidate (same rows)": _short(evidence.candidate_on_shared_rows),
    }
    if not decision.moves_champion:
        return Outcome(
            decision.decision, decision.reasons, version, was, was,
            compared=compared,
        )  # fmt: skip

    _step("promote")
    why = reason if force else "; ".join(decision.reasons)
    registry.move_champion(
        client, name, version,
        {"action": "release", "forced": force, "reason": why, "run_id": run_id,
         "flow_run_id": flow_run_id},
        after_move=lambda: _step("record"),
    )  # fmt: skip
    return Outcome(
        decision.decision,
        decision.reasons,
        version,
        was,
        version,
        forced=force,
        compared=compared,
    )


def rollback(params: Params, paths: Paths, reason: str, to: str | None = None) -> dict[str, Any]:
    """Move `champion` back: to `to`, or to the version it held before the current one."""
    if not reason.strip():
        raise StepError("a rollback needs --reason")
    name = params.release.model_name
    with locked(paths, params.release.lock_timeout_seconds), journal.intent(paths, "rollback"):
        client = registry.connect(paths)
        registry.ensure_model(client, name)
        registry.reconcile(client, name)
        current = registry.champion(client, name)
        if current is None:
            raise StepError(f"{name} has no champion to roll back")
        target = to or _previous_champion(registry.history(client, name), str(current.version))
        if target is None:
            raise StepError(f"{name} has had no champion before version {current.version}; "
                            "name one with --to")  # fmt: skip
        chosen = registry.version(client, name, target)
        if chosen is None:
            raise StepError(f"{name} has no version {target}")
        if "smoke.latency_p99_ms" not in chosen.tags:
            raise StepError(f"version {target} never passed the smoke test; it cannot serve")
        if target == str(current.version):
            raise StepError(f"version {target} is already the champion")
        return registry.move_champion(
            client, name, target,
            {"action": "rollback", "forced": False, "reason": reason,
             "flow_run_id": os.environ.get(tracking.FLOW_RUN_ENV)},
        )  # fmt: skip


def _previous_champion(entries: list[dict[str, Any]], current: str) -> str | None:
    """The champion before the latest move to `current`."""
    for entry in reversed(entries):
        if entry.get("to") == current:
            return entry.get("from")
    return None


def _package(paths: Paths, params: Params, threshold: float, test: pd.DataFrame) -> Path:
    from tasks.release.packaging import package

    return package(
        paths.models / "model.pt",
        paths.features / "encoders.json",
        threshold,
        test.head(5),
        paths.root / "requirements.lock",
        paths.var / "release" / "model",
    )


def scored_test_rows(paths: Paths) -> pd.DataFrame:
    """The test window's raw joined rows with evaluate's probability as `expected`."""
    test = pd.read_parquet(require(paths.features / "test.parquet", "featurize"))
    scored = pd.read_parquet(require(paths.reports / "test_predictions.parquet", "evaluate"))
    keys = ["date", "carrier", "flight", "origin"]
    if len(scored) != len(test) or not scored[keys].equals(test[keys]):
        raise StepError("reports/test_predictions.parquet does not match the test features:"
                        " run evaluate again (dvc repro)")  # fmt: skip
    return test.assign(expected=scored["proba"].to_numpy())


def _smoke_test(paths: Paths, params: Params, uri: str, test: pd.DataFrame) -> dict[str, Any]:
    """Run tasks.release.smoke in a fresh interpreter against evaluate's own predictions."""
    sample = test.sample(n=min(params.release.smoke_rows, len(test)), random_state=0)
    work = paths.var / "release" / "smoke"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sample.to_parquet(work / "rows.parquet")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(paths),
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # fmt: skip
    cfg = params.release
    argv = [sys.executable, "-m", "tasks.release.smoke", uri, str(work / "rows.parquet"),
            str(work / "result.json"), "--samples", str(cfg.latency_samples),
            "--rounds", str(cfg.latency_rounds),
            "--tolerance", str(cfg.smoke_tolerance)]  # fmt: skip
    try:
        # Guarded: the smoke process never outlives this one, and past the limit it stops.
        done = run_guarded(argv, timeout=cfg.smoke_timeout_seconds, cwd=paths.root, env=env)
    except subprocess.TimeoutExpired:
        raise StepError(
            f"the smoke test did not finish within {cfg.smoke_timeout_seconds:g} s "
            "(release.smoke_timeout_seconds); it was stopped"
        ) from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise StepError(lines[-1] if lines else f"smoke test exited {done.returncode}")
    return dict(read_json(work / "result.json"))


def _evidence(
    params: Params,
    metrics: dict[str, Any],
    smoke: dict[str, Any],
    size: float,
    champion: Any,
    test: pd.DataFrame,
) -> Evidence:
    champion_block = candidate_block = None
    if champion is not None:
        champion_block, candidate_block = rescore_champion(
            params, champion, test, metrics["threshold"]
        )
    return Evidence(
        candidate=metrics["model"],
        baselines=metrics["baselines"],
        origin_slices=metrics["slices"]["origin"],
        latency_p99_ms=smoke["latency_p99_ms"],
        size_mb=size,
        champion=champion_block,
        candidate_on_shared_rows=candidate_block,
    )


def unseen_by(champion_tags: dict[str, str], test: pd.DataFrame) -> pd.Series:
    """The test rows on days after the champion's valid window: it never trained, stopped
    early or chose its threshold on them."""
    window = json.loads(champion_tags.get("data.window", "{}"))
    last_seen = window.get("valid", [None, None])[1]
    if last_seen is None:
        raise StepError("the champion's version has no data.window tag: cannot tell which "
                        "rows it never saw")  # fmt: skip
    return test["date"] > last_seen


def rescore_champion(
    params: Params, champion: Any, test: pd.DataFrame, candidate_threshold: float
) -> tuple[dict[str, float], dict[str, float]]:
    """The champion and the candidate scored on the same rows: the candidate's test days
    that neither model trained on. `test` carries the candidate's scores as `expected`."""
    import mlflow

    from tasks.ml.inference import plain_rows

    rows = test[unseen_by(champion.tags, test)]
    if rows.empty:
        raise StepError(
            f"none of the candidate's test days is newer than champion version "
            f"{champion.version}'s valid window: nothing fair to compare on"
        )
    if "threshold" not in champion.tags:
        raise StepError(f"champion version {champion.version} has no threshold tag: cannot "
                        "score it as it is served")  # fmt: skip
    name = params.release.model_name
    model = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
    champion_scores = model.predict(plain_rows(rows))["probability"].to_numpy()
    y, target, bins = (
        rows[LABEL].to_numpy(),
        params.evaluate.min_precision,
        params.evaluate.calibration_bins,
    )
    # Each model at its own operating threshold, as each is (or would be) served.
    return (
        metric_block(y, champion_scores, float(champion.tags["threshold"]), target, bins),
        metric_block(y, rows["expected"].to_numpy(), candidate_threshold, target, bins),
    )


def _tag_version(
    client: Any,
    params: Params,
    version: str,
    run_id: str,
    train: dict[str, Any],
    decision: Decision,
    evidence: Evidence,
    smoke: dict[str, Any],
    reason: str,
    flow_run_id: str | None,
) -> None:
    run_tags = client.get_run(run_id).data.tags
    lineage = {k: v for k, v in run_tags.items() if k.startswith(("git.", "dvc.", "prefect."))}
    policy = params.release.model_dump()
    tags = {
        **lineage,
        "mlflow.run_id": run_id,
        "prefect.release_flow_run_id": flow_run_id or "",
        "data.window": json.dumps(train["window"]),
        "threshold": str(evidence.candidate["threshold"]),
        "metrics.candidate": registry.clip(_short(evidence.candidate)),
        "metrics.champion": registry.clip(_short(evidence.champion) or "none"),
        "metrics.candidate_on_shared_rows": registry.clip(
            _short(evidence.candidate_on_shared_rows) or "none"
        ),
        "metrics.baselines": registry.clip({k: _short(v) for k, v in evidence.baselines.items()}),
        "gate.policy": registry.clip(policy),
        "gate.failed": registry.clip([c.name for c in decision.checks if not c.passed]),
        "size_mb": f"{evidence.size_mb:.3f}",
        **{f"smoke.{k}": str(v) for k, v in smoke.items()},
        "forced": str(decision.forced),
        "reasons": registry.clip(decision.reasons),
    }  # fmt: skip
    if decision.forced:
        tags["force_reason"] = registry.clip(reason)
    for key, value in tags.items():
        client.set_model_version_tag(params.release.model_name, version, key, value)
    # The decision last: a version with a decision carries all of its evidence.
    client.set_model_version_tag(params.release.model_name, version, "decision", decision.decision)


def _short(block: dict[str, Any] | None) -> dict[str, float]:
    return {k: round(float(block[k]), 4) for k in REPORTED if k in block} if block else {}


def model_card(
    version: str, train: dict[str, Any], evidence: Evidence, decision: Decision,
    metrics: dict[str, Any], params: Params,
) -> str:  # fmt: skip
    """A short markdown model card for the version's description."""
    window = train["window"]
    rows = [("candidate", evidence.candidate), *list(evidence.baselines.items())]
    if evidence.champion:
        rows += [("champion (same rows)", evidence.champion),
                 ("candidate (same rows)", evidence.candidate_on_shared_rows or {})]  # fmt: skip
    table = "\n".join(
        f"| {n} | {b.get(METRIC, float('nan')):.3f} | {b.get('pr_auc', float('nan')):.3f} | "
        f"{b.get('precision', float('nan')):.3f} | {b.get('recall', float('nan')):.3f} |"
        for n, b in rows
    )
    verdict = {NO_CHANGE: "no material change; the champion stays"}.get(
        decision.decision, decision.decision
    )
    return f"""# Flight delay model, version {version}

**Decision: {verdict}**{" (forced)" if decision.forced else ""}. {"; ".join(decision.reasons)}

Predicts whether a flight leaving New York will depart 15 minutes or more late, or be
cancelled, from what is known before its scheduled departure: schedule, origin weather at
the scheduled hour, the plane, and the same day's earlier outcomes.

**Data**: trained on {window["train"][0]} to {window["train"][1]}, early-stopped and
thresholded on {window["valid"][0]} to {window["valid"][1]}, tested on {window["test"][0]} to
{window["test"][1]} ({metrics["test_rows"]:,} flights).

| model | recall at precision {params.evaluate.min_precision} | PR-AUC | precision | recall |
| --- | --- | --- | --- | --- |
{table}

**Intended use**: warn passengers and operations of a likely delay, where a warning must be
right at least {params.evaluate.min_precision:.0%} of the time. Input: raw joined rows (see
the signature); output: the probability and the warn flag at threshold
{evidence.candidate["threshold"]:.4f}.

**Limits**: New York's three airports in 2013 only; seasons absent from training are
extrapolated; the same-day history columns must be computed as featurize does, with
outcomes known at least {params.featurize.history_gap_minutes:g} minutes before departure;
rows without them are scored with train medians and are less accurate.
"""


def describe(outcome: Outcome) -> str:
    """What the release did, for people."""
    lines = [f"repaired: {line}" for line in outcome.repaired]
    head = f"decision: {outcome.decision}" + (" (forced)" if outcome.forced else "")
    lines.append(f"{head}, candidate version {outcome.version or '-'}")
    lines += [f"  - {reason}" for reason in outcome.reasons]
    if outcome.champion_after != outcome.champion_before:
        lines.append(f"champion: {outcome.champion_before or 'none'} -> {outcome.champion_after}")
    else:
        lines.append(f"champion: {outcome.champion_after or 'none'} (unchanged)")
    return "\n".join(lines)
