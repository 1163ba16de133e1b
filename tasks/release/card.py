"""What a registered version says about itself, in three places, all pure functions of what
the release decided:

    tags       short scalars a person reads in the versions list and a program filters on
               (decision = 'rejected', gate.failed LIKE '%champion%'), rounded to what matters
    evidence   everything the gate saw, as JSON and markdown artifacts of the training run
               (evidence/version-<N>.json and .md), named by the `evidence` tag
    card       the version's description: the decision on its first line, what the model
               is for, its data and its scores, and a link to the evidence
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tasks.core.config import Params
from tasks.ml.metrics import REPORTED
from tasks.release import registry
from tasks.release.gate import METRIC, NO_CHANGE, Decision, Evidence

WINDOWS = ("train", "valid", "test")
# Run tags a version carries over: the lineage a person looks for first. The rest of the
# run's tags (every DVC output's md5, the remote's URL) are in the evidence artifact.
CARRIED = ("lineage.commit", "lineage.dirty", "lineage.data_version", "prefect.flow_run_id")


def evidence_path(version: str, suffix: str = "json") -> str:
    """Where a version's evidence lies among its training run's artifacts."""
    return f"evidence/version-{version}.{suffix}"


def version_tags(
    *,
    version: str,
    run_tags: dict[str, str],
    flow_run_id: str | None,
    window: dict[str, Any],
    evidence: Evidence,
    decision: Decision,
    smoke: dict[str, Any],
    reason: str,
) -> dict[str, str]:
    """A judged version's tags (its `decision` tag is set last, apart from these)."""
    tags = {k: run_tags[k] for k in CARRIED if k in run_tags}
    if "lineage.commit" not in tags:  # no record was written: the training's own commit
        tags["git.commit"] = run_tags.get("git.commit", "unknown")
    if flow_run_id and flow_run_id != run_tags.get("prefect.flow_run_id"):
        tags["prefect.release_flow_run_id"] = flow_run_id
    tags |= {f"data.{name}": "/".join(window[name]) for name in WINDOWS if name in window}
    tags |= {
        f"test.{METRIC}": f"{evidence.candidate[METRIC]:.4f}",
        "test.pr_auc": f"{evidence.candidate['pr_auc']:.4f}",
        "threshold": f"{evidence.candidate['threshold']:.4f}",
        "gate.failed": ",".join(c.name for c in decision.checks if not c.passed) or "none",
        "gate.vs_baseline": _signed(evidence.candidate[METRIC] - _best_baseline(evidence)[1]),
        "size_mb": f"{evidence.size_mb:.2f}",
        "smoke.latency_p50_ms": f"{smoke['latency_p50_ms']:.2f}",
        "smoke.latency_p99_ms": f"{smoke['latency_p99_ms']:.2f}",
        "forced": str(decision.forced).lower(),
        "evidence": evidence_path(version),
    }  # fmt: skip
    if evidence.champion and evidence.candidate_on_shared_rows:
        gain = evidence.candidate_on_shared_rows[METRIC] - evidence.champion[METRIC]
        tags["gate.vs_champion"] = _signed(gain)
    if decision.forced:
        tags["force_reason"] = registry.clip(reason)
    return tags


def rejected_tags(version: str, reason: str) -> dict[str, str]:
    """The tags of a version rejected before the gate could weigh it (its smoke test)."""
    return {"gate.failed": "smoke", "evidence": evidence_path(version),
            "reason": registry.clip(reason)}  # fmt: skip


def window(tags: dict[str, str]) -> dict[str, list[str]]:
    """A version's data windows from its tags: {"train": [first, last], ...}."""
    found = {name: tags[f"data.{name}"].split("/") for name in WINDOWS if f"data.{name}" in tags}
    if not found and "data.window" in tags:  # versions registered before the short tags
        import json

        return dict(json.loads(tags["data.window"]))
    return found


def evidence_document(
    *,
    version: str,
    run_id: str,
    run_tags: dict[str, str],
    window: dict[str, Any],
    evidence: Evidence,
    decision: Decision,
    smoke: dict[str, Any],
    policy: dict[str, Any],
    reason: str,
) -> dict[str, Any]:
    """Everything the gate weighed, for a program (the .json) and a person (the .md)."""
    return {
        "version": version,
        "run_id": run_id,
        "decision": decision.decision,
        "forced": decision.forced,
        "force_reason": reason if decision.forced else None,
        "reasons": decision.reasons,
        "checks": [asdict(c) for c in decision.checks],
        "window": window,
        "candidate": evidence.candidate,
        "baselines": evidence.baselines,
        "origin_slices": evidence.origin_slices,
        "champion_on_shared_rows": evidence.champion,
        "candidate_on_shared_rows": evidence.candidate_on_shared_rows,
        "smoke": smoke,
        "size_mb": evidence.size_mb,
        "record_gaps": list(evidence.record_gaps),
        "policy": policy,
        "lineage": {
            k: v
            for k, v in sorted(run_tags.items())
            if k.startswith(("git.", "dvc.", "prefect.", "lineage."))
        },
    }


def rejected_document(version: str, run_id: str, reason: str) -> dict[str, Any]:
    smoke = {"name": "smoke", "passed": False, "detail": reason}
    return {"version": version, "run_id": run_id, "decision": "rejected", "forced": False,
            "reasons": [reason], "checks": [smoke]}  # fmt: skip


def evidence_markdown(doc: dict[str, Any]) -> str:
    """The evidence for a person: every check, then the scores side by side, then lineage."""
    checks = "\n".join(
        f"| {c['name']} | {'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |"
        for c in doc["checks"]
    )
    parts = [
        f"# Evidence for version {doc['version']}: {doc['decision']}",
        "; ".join(doc["reasons"]),
        f"| check | result | detail |\n| --- | --- | --- |\n{checks}",
    ]
    if doc.get("candidate"):
        blocks = {"candidate": doc["candidate"], **doc["baselines"]}
        if doc.get("champion_on_shared_rows"):
            blocks |= {"champion (same rows)": doc["champion_on_shared_rows"],
                       "candidate (same rows)": doc["candidate_on_shared_rows"]}  # fmt: skip
        shown = [k for k in REPORTED if k in doc["candidate"]]
        head = f"| model | {' | '.join(shown)} |\n|{' --- |' * (len(shown) + 1)}"
        rows = "\n".join(
            f"| {name} | " + " | ".join(f"{b[k]:.4f}" if k in b else "-" for k in shown) + " |"
            for name, b in blocks.items()
        )
        parts += ["## Scores on the test window", f"{head}\n{rows}"]
        parts += ["## Smoke test", "\n".join(f"- {k}: {v}" for k, v in doc["smoke"].items())]
        parts += ["## Lineage", "\n".join(f"- {k}: `{v}`" for k, v in doc["lineage"].items())]
    return "\n\n".join(parts) + "\n"


def compared(evidence: Evidence) -> dict[str, dict[str, float]]:
    """The candidate on its whole test window, then both models on the same rows."""
    return {
        "candidate": short(evidence.candidate),
        "champion (same rows)": short(evidence.champion),
        "candidate (same rows)": short(evidence.candidate_on_shared_rows),
    }


def short(block: dict[str, Any] | None) -> dict[str, float]:
    return {k: round(float(block[k]), 4) for k in REPORTED if k in block} if block else {}


def headline(version: str, decision: Decision) -> str:
    """The card's first line: what happened to this version, readable in any list."""
    verdict = {NO_CHANGE: "no change, the champion stays"}.get(decision.decision,
                                                               decision.decision)  # fmt: skip
    forced = " (forced)" if decision.forced else ""
    return f"# Version {version}: {verdict}{forced}"


def model_card(
    version: str, train: dict[str, Any], evidence: Evidence, decision: Decision,
    metrics: dict[str, Any], params: Params, evidence_link: str,
) -> str:  # fmt: skip
    """A short markdown model card for the version's description: one line per paragraph,
    as the MLflow UI keeps every line break it is given."""
    window, precision = train["window"], params.evaluate.min_precision
    rows = [("candidate", evidence.candidate), *list(evidence.baselines.items())]
    if evidence.champion:
        rows += [("champion (same rows)", evidence.champion),
                 ("candidate (same rows)", evidence.candidate_on_shared_rows or {})]  # fmt: skip
    table = "\n".join(
        f"| {n} | {b.get(METRIC, float('nan')):.3f} | {b.get('pr_auc', float('nan')):.3f} | "
        f"{b.get('precision', float('nan')):.3f} | {b.get('recall', float('nan')):.3f} |"
        for n, b in rows
    )
    paragraphs = [
        headline(version, decision),
        f"**Why**: {'; '.join(decision.reasons)}. [Every check and score]({evidence_link}).",
        f"Predicts whether a flight leaving New York will depart "
        f"{params.featurize.delay_minutes:g} minutes or more late, or be cancelled, from what "
        "is known before its scheduled departure: schedule, origin weather at the scheduled "
        "hour, the plane, and the same day's earlier outcomes.",
        f"**Data**: trained on {window['train'][0]} to {window['train'][1]}, early-stopped and "
        f"thresholded on {window['valid'][0]} to {window['valid'][1]}, tested on "
        f"{window['test'][0]} to {window['test'][1]} ({metrics['test_rows']:,} flights).",
        f"| model | recall at precision {precision} | PR-AUC | precision | recall |\n"
        f"| --- | --- | --- | --- | --- |\n{table}",
        f"**Intended use**: warn passengers and operations of a likely delay, where a warning "
        f"must be right at least {precision:.0%} of the time. Input: raw joined rows (see the "
        "signature; `plumber predict --help` lists the columns); output: the probability and "
        f"the warn flag at threshold {evidence.candidate['threshold']:.4f}.",
        "**Limits**: New York's three airports in 2013 only; seasons absent from training are "
        "extrapolated; the same-day history columns must be computed as featurize does, with "
        f"outcomes known at least {params.featurize.history_gap_minutes:g} minutes before "
        "departure; rows without them are scored with train means and are less accurate.",
    ]
    return "\n\n".join(paragraphs) + "\n"


def rejected_card(version: str, reason: str, evidence_link: str) -> str:
    return (f"# Version {version}: rejected\n\n**Why**: {reason}. "
            f"[The evidence]({evidence_link}).\n")  # fmt: skip


def _best_baseline(evidence: Evidence) -> tuple[str, float]:
    name = max(evidence.baselines, key=lambda k: evidence.baselines[k][METRIC])
    return name, float(evidence.baselines[name][METRIC])


def _signed(value: float) -> str:
    return f"{value:+.4f}"
