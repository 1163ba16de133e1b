"""Release: package the trained candidate, smoke-test it, gate it, and move `champion`
(`plumber release [--rejudge | --force] [--reason TEXT]`, and the flow's last step).

Steps, in order; the alias move is the only step that changes what is served (rollback.py):

    1. lock        one release or rollback at a time (var/release.lock)
    2. reconcile   repair what a killed release left (tasks/release/registry.py)
       record      the candidate's data pushed and its record written, unless the flow's
                   `record` task did (tasks/lineage/record.py)
    3. package     the pyfunc model, saved under var/release/ and logged to the training run
    4. register    a new version of `release.model_name`, decision "pending"
    5. smoke       a fresh process loads it by registry URI and must reproduce evaluate's
                   predictions within release.smoke_tolerance; latency measured there
    6. gate        the champion re-scored on the candidate's test days it never saw, and
                   the record checked against the DVC remote; tasks/release/gate.py
                   decides; the version is tagged with the evidence
    7. promote     on "released" only: `champion` moves, and the history records it

Killed anywhere, `champion` still points at a fully registered, smoke-tested version, and
the next release repairs the leftovers and runs normally.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core import clock, journal, tracking
from tasks.core.config import Params
from tasks.core.errors import StepError
from tasks.core.io import read_json, require, write_json
from tasks.core.paths import Paths
from tasks.lineage import record
from tasks.release import card, evidence, recovery, registry
from tasks.release.gate import REJECTED, Decision, Evidence, decide
from tasks.release.packaging import size_mb

log = logging.getLogger(__name__)

# Tests set this to a step name to kill the release right there (see tests/release/test_release.py).
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
    its holder, and with a stack a PostgreSQL advisory lock across machines; a second one
    waits, saying for whom, then fails naming the lock."""
    from tasks.core.locks import one_at_a_time

    with one_at_a_time(
        paths.lock("release"), timeout=timeout, what="a release or rollback",
        setting="release.lock_timeout_seconds",
    ):  # fmt: skip
        yield


def run(
    params: Params,
    paths: Paths,
    force: bool = False,
    reason: str = "",
    flow_run_id: str | None = None,
    rejudge: bool = False,
) -> Outcome:
    """Release the trained candidate; `flow_run_id`: the Prefect flow run doing it.
    `rejudge`: judge a candidate already judged again, by the gate as params.yaml's
    `release` section now says (after a change to it), as a new version."""
    policy, name = params.release, params.release.model_name
    flow_run_id = flow_run_id or os.environ.get(tracking.FLOW_RUN_ENV)
    if force and rejudge:
        raise StepError("--force judges again without the gate, --rejudge with it: not both")
    if (force or rejudge) and not reason.strip():
        raise StepError(f"{'a forced release' if force else '--rejudge'} needs --reason")
    train = read_json(require(paths.train_record, "train"))
    metrics = read_json(require(paths.metrics, "evaluate"))
    run_id = train["run_id"]
    with locked(paths, policy.lock_timeout_seconds), journal.intent(paths, "release") as entry:
        _step("lock")
        client = registry.connect(paths)
        repaired = recovery.recover(paths, name, client)
        unrecorded = _record(params, paths, client, run_id, flow_run_id)
        release = Release(params, paths, client, train, metrics, force, reason, flow_run_id, entry,
                          unrecorded, rejudge)  # fmt: skip
        outcome = _judge(release)
        outcome.repaired = repaired + outcome.repaired
    write_json(paths.judged, {"run_id": run_id, "version": outcome.version,
                              "decision": outcome.decision})  # fmt: skip
    return outcome


@dataclass
class Release:
    """One release under way: the candidate of `train`, and what judges it."""

    params: Params
    paths: Paths
    client: Any
    train: dict[str, Any]
    metrics: dict[str, Any]
    force: bool
    reason: str
    flow_run_id: str | None
    entry: journal.Intent
    unrecorded: str = ""  # why the candidate's record could not be written, if it could not
    rejudge: bool = False  # judged again by the gate, though already judged

    @property
    def name(self) -> str:
        return self.params.release.model_name

    @property
    def run_id(self) -> str:
        return str(self.train["run_id"])


def _record(params: Params, paths: Paths, client: Any, run_id: str, flow_run_id: str | None) -> str:
    """The candidate's record, unless the flow's `record` task wrote it: "" when written,
    else why not (the gate's `reproducible` check then names it)."""
    if record.recorded(client, run_id):
        return ""
    _step("lineage")
    try:
        record.publish(paths, params, run_id, flow_run_id)
    except StepError as exc:
        log.warning("the candidate's record could not be written: %s", exc)
        return f"the record could not be written: {exc}"
    return ""


def _judge(r: Release) -> Outcome:
    """Steps 3-7 for the candidate, under the release lock."""
    before = registry.champion(r.client, r.name)
    was = registry.number(before)
    judged = _already_judged(r, was)
    if judged is not None:
        return judged
    test = evidence.scored_test_rows(r.paths)
    version, size = _package_and_register(r, test)
    _step("smoke")
    try:
        smoke = evidence.smoke_test(r.paths, r.params, f"models:/{r.name}/{version}", test)
    except StepError as exc:
        _record_smoke_failure(r, version, str(exc))
        return Outcome(REJECTED, [str(exc)], version, was, was)
    _step("gate")
    gaps = [r.unrecorded] if r.unrecorded else record.gaps(r.paths, r.client, r.run_id)
    found = evidence.gather(r.params, r.metrics, smoke, size, before, test, gaps)
    decision = decide(found, r.params.release, force=r.force)
    _record_decision(r, version, found, decision, smoke)
    compared = card.compared(found)
    if not decision.moves_champion:
        return Outcome(decision.decision, decision.reasons, version, was, was, compared=compared)
    _promote(r, version, decision)
    return Outcome(decision.decision, decision.reasons, version, was, version,
                   forced=r.force, compared=compared)  # fmt: skip


def _already_judged(r: Release, champion: str | None) -> Outcome | None:
    """A training is judged once: again only with --rejudge (by the gate) or --force
    (a version per judgement)."""
    unfinished = (registry.PENDING, registry.ABANDONED)
    decided = [v for v in registry.versions_of_run(r.client, r.name, r.run_id)
               if v.tags.get("decision") not in unfinished]  # fmt: skip
    if not decided or r.force or r.rejudge:
        return None
    latest = max(decided, key=lambda v: int(v.version))
    return Outcome(
        latest.tags["decision"],
        [f"this training (run {r.run_id}) was already judged as version {latest.version}: "
         "train a new candidate, judge it again with --rejudge (after a change to the "
         "release policy), or use --force"],
        str(latest.version), champion, champion,
    )  # fmt: skip


def _package_and_register(r: Release, test: pd.DataFrame) -> tuple[str, float]:
    """Steps 3-4: the pyfunc logged to the training run, registered as a pending version."""
    _step("package")
    packaged = _package(r.paths, r.params, r.metrics["threshold"], test)
    artifact_path = f"release/{clock.now():%Y%m%dT%H%M%S%f}"
    r.client.log_artifacts(r.run_id, str(packaged), artifact_path)
    _step("register")
    source = f"{r.client.get_run(r.run_id).info.artifact_uri}/{artifact_path}"
    version = r.client.create_model_version(
        r.name, source, run_id=r.run_id, tags={"decision": registry.PENDING}
    ).version
    r.entry.note(version=str(version))
    return str(version), size_mb(packaged)


def _record_decision(
    r: Release, version: str, found: Evidence, decision: Decision, smoke: dict[str, Any]
) -> None:
    """The evidence as artifacts of the training run, the decision and its summary as the
    version's tags, and its model card."""
    run_tags = r.client.get_run(r.run_id).data.tags
    window = r.train["window"]
    doc = card.evidence_document(
        version=version, run_id=r.run_id, run_tags=run_tags, window=window, evidence=found,
        decision=decision, smoke=smoke, policy=r.params.release.model_dump(), reason=r.reason,
    )  # fmt: skip
    if r.rejudge:
        doc["rejudge_reason"] = r.reason
    link = _log_evidence(r, version, doc)
    tags = card.version_tags(
        version=version, run_tags=run_tags, flow_run_id=r.flow_run_id, window=window,
        evidence=found, decision=decision, smoke=smoke, reason=r.reason,
    )  # fmt: skip
    if r.rejudge:
        tags["rejudge_reason"] = registry.clip(r.reason)
    _tag(r, version, tags, decision.decision)
    description = card.model_card(version, r.train, found, decision, r.metrics, r.params, link)
    r.client.update_model_version(r.name, version, description=description)


def _record_smoke_failure(r: Release, version: str, reason: str) -> None:
    link = _log_evidence(r, version, card.rejected_document(version, r.run_id, reason))
    _tag(r, version, card.rejected_tags(version, reason), REJECTED)
    description = card.rejected_card(version, reason, link)
    r.client.update_model_version(r.name, version, description=description)


def _log_evidence(r: Release, version: str, doc: dict[str, Any]) -> str:
    """The evidence as JSON and markdown in the training run; the MLflow UI's link to it."""
    r.client.log_dict(r.run_id, doc, card.evidence_path(version, "json"))
    r.client.log_text(r.run_id, card.evidence_markdown(doc), card.evidence_path(version, "md"))
    experiment = r.client.get_run(r.run_id).info.experiment_id
    return tracking.run_page(experiment, r.run_id, f"artifacts/{card.evidence_path(version, 'md')}")


def _tag(r: Release, version: str, tags: dict[str, str], decision: str) -> None:
    for key, value in tags.items():
        r.client.set_model_version_tag(r.name, version, key, value)
    # The decision last: a version with a decision carries all of its evidence.
    r.client.set_model_version_tag(r.name, version, "decision", decision)


def _promote(r: Release, version: str, decision: Decision) -> None:
    """Step 7: the champion alias moves, and the history records why."""
    _step("promote")
    why = r.reason if r.force else "; ".join(decision.reasons)
    if r.rejudge:
        why = f"judged again ({r.reason}): {why}"
    registry.move_champion(
        r.client, r.name, version,
        {"action": "release", "forced": r.force, "reason": why, "run_id": r.run_id,
         "flow_run_id": r.flow_run_id},
        after_move=lambda: _step("record"),
    )  # fmt: skip


def _package(paths: Paths, params: Params, threshold: float, test: pd.DataFrame) -> Path:
    from tasks.release.packaging import package

    return package(paths.checkpoint, paths.encoders, threshold, test.head(5),
                   paths.requirements_lock, paths.release_work / "model")  # fmt: skip


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
