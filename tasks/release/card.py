"""What a registered version says about itself: its tags (the evidence, the decision, the
lineage; filterable in the MLflow UI) and its model card (the version's description).
Pure functions of what the release decided.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.core.config import Params
from tasks.ml.metrics import REPORTED
from tasks.release import registry
from tasks.release.gate import METRIC, NO_CHANGE, Decision, Evidence


def version_tags(
    *,
    run_id: str,
    run_tags: dict[str, str],
    flow_run_id: str | None,
    window: dict[str, Any],
    evidence: Evidence,
    decision: Decision,
    smoke: dict[str, Any],
    policy: dict[str, Any],
    reason: str,
) -> dict[str, str]:
    """A judged version's tags (its `decision` tag is set last, apart from these)."""
    lineage = {
        k: v for k, v in run_tags.items() if k.startswith(("git.", "dvc.", "prefect.", "lineage."))
    }
    tags = {
        **lineage,
        "mlflow.run_id": run_id,
        "prefect.release_flow_run_id": flow_run_id or "",
        "data.window": json.dumps(window),
        "threshold": str(evidence.candidate["threshold"]),
        "metrics.candidate": registry.clip(short(evidence.candidate)),
        "metrics.champion": registry.clip(short(evidence.champion) or "none"),
        "metrics.candidate_on_shared_rows": registry.clip(
            short(evidence.candidate_on_shared_rows) or "none"
        ),
        "metrics.baselines": registry.clip({k: short(v) for k, v in evidence.baselines.items()}),
        "gate.policy": registry.clip(policy),
        "gate.failed": registry.clip([c.name for c in decision.checks if not c.passed]),
        "size_mb": f"{evidence.size_mb:.3f}",
        **{f"smoke.{k}": str(v) for k, v in smoke.items()},
        "forced": str(decision.forced),
        "reasons": registry.clip(decision.reasons),
    }  # fmt: skip
    if decision.forced:
        tags["force_reason"] = registry.clip(reason)
    return tags


def compared(evidence: Evidence) -> dict[str, dict[str, float]]:
    """The candidate on its whole test window, then both models on the same rows."""
    return {
        "candidate": short(evidence.candidate),
        "champion (same rows)": short(evidence.champion),
        "candidate (same rows)": short(evidence.candidate_on_shared_rows),
    }


def short(block: dict[str, Any] | None) -> dict[str, float]:
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

Predicts whether a flight leaving New York will depart {params.featurize.delay_minutes:g}
minutes or more late, or be cancelled, from what is known before its scheduled departure:
schedule, origin weather at the scheduled hour, the plane, and the same day's earlier
outcomes.

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
