"""The release gate's decisions, table-driven: evidence in, decision and reasons out."""

from __future__ import annotations

import pytest

from tasks.release.gate import NO_CHANGE, REJECTED, RELEASED, Evidence, decide
from tests.factories import section

POLICY = section(
    "release",
    min_recall_at_precision=0.5, min_pr_auc=0.5, min_lift_over_majority=0.3,
    min_lift_over_logistic_regression=0.0, max_regression=0.02, min_improvement=0.005,
    min_slice_fraction=0.8, max_p99_latency_ms=50, max_model_mb=25,
)  # fmt: skip


def block(metric: float, pr_auc: float = 0.7) -> dict[str, float]:
    return {"recall_at_precision": metric, "pr_auc": pr_auc}


def evidence(**changes) -> Evidence:
    base = {
        "candidate": block(0.74),
        "baselines": {"majority": block(0.0, 0.35), "logistic_regression": block(0.72)},
        "origin_slices": {"EWR": block(0.73), "JFK": block(0.70), "LGA": block(0.76)},
        "latency_p99_ms": 20.0,
        "size_mb": 0.8,
    }
    return Evidence(**{**base, **changes})


def against_champion(candidate: float, champion: float, pr: float = 0.7) -> dict:
    return {"champion": block(champion, pr), "candidate_on_shared_rows": block(candidate, 0.7)}


CASES = [
    # name, evidence, force, expected decision, a phrase the reasons must contain
    ("first release", evidence(), False, RELEASED, "first release"),
    ("better than the champion", evidence(**against_champion(0.75, 0.73)), False, RELEASED,
     "+0.0200 against the champion"),
    ("worse than the champion", evidence(**against_champion(0.70, 0.73)), False, REJECTED,
     "recall_at_precision change against the champion -0.0300"),
    ("worse PR-AUC than the champion", evidence(**against_champion(0.74, 0.74, pr=0.75)), False,
     REJECTED, "pr_auc change against the champion -0.0500"),
    ("within noise", evidence(**against_champion(0.742, 0.740)), False, NO_CHANGE,
     "needs >= +0.0050"),
    ("a failing slice", evidence(origin_slices={"EWR": block(0.74), "JFK": block(0.50)}), False,
     REJECTED, "origin JFK"),
    ("over-budget latency", evidence(latency_p99_ms=80.0), False, REJECTED,
     "p99 single-row latency 80.0 ms (budget 50 ms)"),
    ("over-budget size", evidence(size_mb=30.0), False, REJECTED, "packaged size 30.00 MB"),
    ("below the floor", evidence(candidate=block(0.45)), False, REJECTED, "recall at precision 0.4500"),
    ("no lift over logistic regression", evidence(candidate=block(0.71)), False, REJECTED,
     "lift over logistic_regression -0.0100"),
    ("data not in the DVC remote", evidence(record_gaps=("data/validated/flights/x.parquet",)),
     False, REJECTED, "not reproducible: 1 missing (data/validated/flights/x.parquet)"),
    ("forced despite a failure", evidence(latency_p99_ms=80.0), True, RELEASED,
     "forced despite: p99 single-row latency 80.0 ms"),
    ("forced over a better champion", evidence(**against_champion(0.70, 0.73)), True, RELEASED,
     "forced despite"),
]  # fmt: skip


@pytest.mark.parametrize(("evidence_", "force", "expected", "phrase"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_gate_decisions(evidence_: Evidence, force: bool, expected: str, phrase: str) -> None:
    decision = decide(evidence_, POLICY, force=force)
    assert decision.decision == expected
    assert decision.forced is force
    assert any(phrase in reason for reason in decision.reasons), decision.reasons
    assert decision.moves_champion is (expected == RELEASED)


def test_every_failed_check_is_a_reason() -> None:
    decision = decide(evidence(latency_p99_ms=80.0, size_mb=30.0), POLICY)
    failed = [c.name for c in decision.checks if not c.passed]
    assert failed == ["budget.latency_p99_ms", "budget.size_mb"]
    assert len(decision.reasons) == 2


def test_champion_checks_apply_only_when_there_is_a_champion() -> None:
    first = {c.name for c in decide(evidence(), POLICY).checks}
    later = {c.name for c in decide(evidence(**against_champion(0.75, 0.73)), POLICY).checks}
    assert later - first == {"champion.recall_at_precision", "champion.pr_auc"}


def test_an_unreproducible_candidate_may_be_allowed_and_says_so() -> None:
    allowed = POLICY.model_copy(update={"require_reproducible": False})
    decision = decide(evidence(record_gaps=("models/model.pt",)), allowed)
    [check] = [c for c in decision.checks if c.name == "reproducible"]
    assert check.passed and check.detail == (
        "not reproducible: 1 missing (models/model.pt); allowed by "
        "release.require_reproducible: false"
    )
