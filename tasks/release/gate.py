"""The release gate: a pure function from evidence and policy to a decision.

The service metric is `recall_at_precision`. A candidate becomes the champion only if it
clears every check below; against an existing champion it must also improve by at least
`min_improvement`, or the decision is "no-change" and the champion stays.

    floors       recall_at_precision and pr_auc at least the configured minimum
    baselines    lift over majority and logistic regression on the service metric
    champion     on the same rows, not worse by more than max_regression (metric and PR-AUC)
    slices       each origin airport at least min_slice_fraction of the overall metric
    budgets      p99 single-row latency and packaged size
    reproducible its record is complete and every object of its data is in the DVC remote
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.core.config import ReleaseParams

METRIC = "recall_at_precision"
RELEASED, REJECTED, NO_CHANGE = "released", "rejected", "no-change"


@dataclass(frozen=True)
class Evidence:
    candidate: dict[str, float]  # the candidate's metrics on its test window
    baselines: dict[str, dict[str, float]]
    origin_slices: dict[str, dict[str, float]]
    latency_p99_ms: float
    size_mb: float
    # Both re-scored on the same rows (test days the champion never trained on); None on
    # the first release.
    champion: dict[str, float] | None = None
    candidate_on_shared_rows: dict[str, float] | None = None
    # What rebuilding the candidate would lack: record files, objects not in the DVC
    # remote (tasks/lineage/record.py). Empty: it can be rebuilt from the shared stores.
    record_gaps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float
    limit: float
    detail: str


@dataclass(frozen=True)
class Decision:
    decision: str  # RELEASED, REJECTED or NO_CHANGE
    reasons: list[str]
    checks: list[Check] = field(default_factory=list)
    forced: bool = False

    @property
    def moves_champion(self) -> bool:
        return self.decision == RELEASED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _at_least(name: str, value: float, limit: float, what: str) -> Check:
    return Check(name, value >= limit, value, limit, f"{what} {value:.4f} (needs >= {limit:.4f})")


def checks(evidence: Evidence, policy: ReleaseParams) -> list[Check]:
    """Every check that applies, passed or not."""
    cand = evidence.candidate
    out = [
        _at_least("floor.recall_at_precision", cand[METRIC], policy.min_recall_at_precision,
                  "recall at precision"),
        _at_least("floor.pr_auc", cand["pr_auc"], policy.min_pr_auc, "PR-AUC"),
    ]  # fmt: skip
    for baseline, margin in (
        ("majority", policy.min_lift_over_majority),
        ("logistic_regression", policy.min_lift_over_logistic_regression),
    ):
        lift = cand[METRIC] - evidence.baselines[baseline][METRIC]
        out.append(_at_least(f"lift.{baseline}", lift, margin, f"lift over {baseline}"))
    for origin, block in sorted(evidence.origin_slices.items()):
        fraction = block[METRIC] / cand[METRIC] if cand[METRIC] else 0.0
        out.append(
            _at_least(f"slice.origin.{origin}", fraction, policy.min_slice_fraction,
                      f"origin {origin}: share of the overall recall at precision")
        )  # fmt: skip
    out += [
        Check("budget.latency_p99_ms", evidence.latency_p99_ms <= policy.max_p99_latency_ms,
              evidence.latency_p99_ms, policy.max_p99_latency_ms,
              f"p99 single-row latency {evidence.latency_p99_ms:.1f} ms "
              f"(budget {policy.max_p99_latency_ms:g} ms)"),
        Check("budget.size_mb", evidence.size_mb <= policy.max_model_mb, evidence.size_mb,
              policy.max_model_mb,
              f"packaged size {evidence.size_mb:.2f} MB (budget {policy.max_model_mb:g} MB)"),
    ]  # fmt: skip
    out.append(_reproducible(evidence.record_gaps, policy.require_reproducible))
    if evidence.champion is not None and evidence.candidate_on_shared_rows is not None:
        for metric in (METRIC, "pr_auc"):
            change = evidence.candidate_on_shared_rows[metric] - evidence.champion[metric]
            out.append(
                _at_least(f"champion.{metric}", change, -policy.max_regression,
                          f"{metric} change against the champion")
            )  # fmt: skip
    return out


def _reproducible(gaps: tuple[str, ...], required: bool) -> Check:
    if not gaps:
        return Check("reproducible", True, 0.0, 0.0, "record complete, data in the DVC remote")
    shown = ", ".join(gaps[:3]) + (", ..." if len(gaps) > 3 else "")
    detail = f"not reproducible: {len(gaps)} missing ({shown})"
    if not required:
        detail += "; allowed by release.require_reproducible: false"
    return Check("reproducible", not required, float(len(gaps)), 0.0, detail)


def decide(evidence: Evidence, policy: ReleaseParams, force: bool = False) -> Decision:
    """released, rejected or no-change, with the reasons a person would need."""
    results = checks(evidence, policy)
    failed = [c.detail for c in results if not c.passed]
    if force:
        why = ["forced despite: " + "; ".join(failed)] if failed else ["forced; every check passed"]
        return Decision(RELEASED, why, results, forced=True)
    if failed:
        return Decision(REJECTED, failed, results)
    if evidence.champion is None or evidence.candidate_on_shared_rows is None:
        return Decision(RELEASED, ["first release: floors, baselines, slices and budgets pass"],
                        results)  # fmt: skip
    gain = evidence.candidate_on_shared_rows[METRIC] - evidence.champion[METRIC]
    if gain < policy.min_improvement:
        return Decision(
            NO_CHANGE,
            [f"recall at precision {gain:+.4f} against the champion on the same rows "
             f"(a release needs >= +{policy.min_improvement:.4f})"],
            results,
        )  # fmt: skip
    return Decision(
        RELEASED, [f"recall at precision {gain:+.4f} against the champion on the same rows"],
        results,
    )  # fmt: skip
