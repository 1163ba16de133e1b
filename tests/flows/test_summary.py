"""The run's decision as Prefect shows it: the state name, its message and its tags."""

from __future__ import annotations

from typing import Any

from flows.summary import outcome


def summary(release: dict[str, Any] | None, reason: str = "") -> dict[str, Any]:
    return {"release": release, "retrain": {"retrain": release is not None, "reason": reason}}


def release(decision: str, reasons: list[str], before: str | None, after: str | None) -> Any:
    return {"decision": decision, "version": "4", "reasons": reasons,
            "champion_before": before, "champion_after": after, "forced": False}  # fmt: skip


def test_a_rejected_candidate_is_named_rejected_with_its_reasons() -> None:
    why = ["recall_at_precision 0.41 < floor 0.50", "latency p99 61 ms > budget 50 ms"]
    name, message, tags = outcome(summary(release("rejected", why, "3", "3")))
    assert name == "Rejected"
    assert message == (
        "candidate version 4 rejected: recall_at_precision 0.41 < floor 0.50; "
        "latency p99 61 ms > budget 50 ms (champion 3)"
    )
    assert tags == ["decision:rejected", "candidate:4"]


def test_a_release_names_the_champion_move() -> None:
    name, message, tags = outcome(summary(release("released", ["first release"], None, "4")))
    assert (name, tags) == ("Released", ["decision:released", "candidate:4"])
    assert message.endswith("(champion none -> 4)")
    name, _, _ = outcome(summary(release("no-change", ["not better"], "3", "3")))
    assert name == "No change"


def test_no_retrain_says_why() -> None:
    reason = "120 new rows since 2013-01-05 (fewer than 500)"
    assert outcome(summary(None, reason)) == ("No retrain", reason, ["decision:no-retrain"])


def test_a_remote_inside_the_checkout_is_shown_relative_to_it(tmp_path) -> None:
    from flows.summary import shown_location

    assert shown_location(str(tmp_path / "var/dvc-remote"), tmp_path) == "var/dvc-remote"
    assert shown_location((tmp_path / "var/r").as_uri(), tmp_path) == "var/r"
    assert shown_location("s3://plumber/dvc", tmp_path) == "s3://plumber/dvc"
    assert shown_location("/srv/shared/dvc", tmp_path) == "/srv/shared/dvc"
