"""The retrain policy: table-driven decisions, and the facts it reads from disk."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.paths import Paths
from tasks.ops.retrain import LastTraining, decide, describe, last_training, rows_after, verdict
from tests.factories import section

NOW = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC)
RULE = section("schedule.retrain_when", new_rows=500, days_since_training=7)
LAST = LastTraining(newest_day="2013-06-30", finished=NOW - dt.timedelta(days=2))


@pytest.mark.parametrize(
    ("last", "new_rows", "force", "retrain", "says"),
    [
        (None, 0, None, True, "no trained model yet"),
        (LAST, 0, "plumber run --force", True, "forced: plumber run --force"),
        (LAST, 500, None, True, "500 new rows since 2013-06-30"),
        (LAST, 499, None, False, "499 new rows since 2013-06-30, last training 2.0 days ago"),
        (LastTraining("2013-06-30", NOW - dt.timedelta(days=7)), 0, None, True,
         "schedule.retrain_when.days_since_training: 7"),
        (LastTraining("2013-06-30", NOW - dt.timedelta(days=6.9)), 10, None, False,
         "schedule.retrain_when: new_rows 500 or days_since_training 7"),
        (LastTraining("2013-06-30", NOW + dt.timedelta(days=36.3)), 10, None, False,
         "last training recorded 36.3 days ahead of this machine's clock (the clock moved "
         "back: days since training do not count)"),
    ],
)  # fmt: skip
def test_decide(last, new_rows, force, retrain, says) -> None:
    result = decide(RULE, last, new_rows, NOW, force)
    assert result.retrain is retrain
    assert says in result.reason
    assert describe(result).startswith("retrain: " if retrain else "no retrain needed: ")


def _train_json(paths: Paths, newest: str, finished: str | None) -> None:
    paths.models.mkdir(parents=True, exist_ok=True)
    info = {"window": {"test": ["2013-06-10", newest]}, "run_id": "r"}
    if finished:
        info["finished"] = finished
    (paths.models / "train.json").write_text(json.dumps(info))


def test_new_rows_are_counted_on_days_after_the_last_training(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path)
    flights = paths.validated / "flights"
    flights.mkdir(parents=True)
    for day, rows in (
        ("2013-06-29", 7),
        ("2013-06-30", 11),
        ("2013-07-01", 300),
        ("2013-07-02", 250),
    ):
        pd.DataFrame({"x": range(rows)}).to_parquet(flights / f"{day}.parquet")
    assert rows_after(flights, "2013-06-30") == 550
    assert rows_after(flights, "2013-07-02") == 0

    assert verdict(RULE, paths, None, NOW).reason == "no trained model yet"
    _train_json(paths, "2013-06-30", "2026-11-24T11:00:00+00:00")
    assert last_training(paths) == LastTraining(
        "2013-06-30", dt.datetime(2026, 11, 24, 11, tzinfo=dt.UTC)
    )
    assert verdict(RULE, paths, None, NOW).retrain  # 550 >= 500
    assert not verdict(section("schedule.retrain_when", new_rows=551), paths, None, NOW).retrain
    # The policy counts the source it names: another source with no new rows, no retrain.
    (paths.validated / "departures").mkdir()
    assert not verdict(
        section("schedule.retrain_when", source="departures", new_rows=1), paths, None, NOW
    ).retrain

    _train_json(paths, "2013-07-01", None)  # an older train.json: the file's time counts
    last = last_training(paths)
    assert last is not None and abs(last.finished - dt.datetime.now(dt.UTC)).total_seconds() < 60
    assert "250 new rows since 2013-07-01" in verdict(RULE, paths, None).reason


def _lock(**deps_and_outs: tuple[dict[str, str], dict[str, str]]) -> dict:
    """A dvc.lock: stage -> (its deps, its outs), each path -> md5."""
    return {"stages": {
        name: {"deps": [{"path": p, "md5": m} for p, m in deps.items()],
               "outs": [{"path": p, "md5": m} for p, m in outs.items()]}
        for name, (deps, outs) in deps_and_outs.items()
    }}  # fmt: skip


STAGES = ["featurize", "train", "evaluate"]


@pytest.mark.parametrize(
    ("lock", "behind"),
    [
        # Every stage ran on what the stage before it produced: nothing left undone.
        (_lock(featurize=({"data/validated": "v1"}, {"data/features": "f1"}),
               train=({"data/features": "f1"}, {"models/model.pt": "m1"}),
               evaluate=({"data/features": "f1", "models/model.pt": "m1"}, {"r": "r1"})), []),
        # New validated data since featurize: the policy's business, not a stopped run.
        (_lock(featurize=({"data/validated": "v0"}, {"data/features": "f1"}),
               train=({"data/features": "f1"}, {"models/model.pt": "m1"}),
               evaluate=({"data/features": "f1", "models/model.pt": "m1"}, {"r": "r1"})), []),
        # Killed during training: features built, never trained on.
        (_lock(featurize=({"data/validated": "v1"}, {"data/features": "f2"}),
               train=({"data/features": "f1"}, {"models/model.pt": "m1"}),
               evaluate=({"data/features": "f1", "models/model.pt": "m1"}, {"r": "r1"})),
         ["train", "evaluate"]),
        # Killed during evaluation: a model trained, never evaluated.
        (_lock(featurize=({"data/validated": "v1"}, {"data/features": "f1"}),
               train=({"data/features": "f1"}, {"models/model.pt": "m2"}),
               evaluate=({"data/features": "f1", "models/model.pt": "m1"}, {"r": "r1"})),
         ["evaluate"]),
    ],
)  # fmt: skip
def test_unfinished_stages_are_read_from_dvc_lock(lock: dict, behind: list[str]) -> None:
    from tasks.ops.retrain import unfinished_stages

    assert unfinished_stages(lock, STAGES) == behind


def test_a_candidate_no_release_judged_awaits_its_release(tmp_path: Path) -> None:
    import yaml

    from tasks.ops.retrain import unjudged_run

    paths = Paths.at(tmp_path)
    assert unjudged_run(paths) is None  # nothing trained
    _train_json(paths, "2013-06-30", "2026-11-24T11:00:00+00:00")
    assert unjudged_run(paths) == "r"
    last = verdict(RULE, paths, None, NOW, stages=STAGES)
    assert not last.retrain and last.judge and "MLflow run r awaits its release" in last.reason
    paths.judged.parent.mkdir(parents=True)
    paths.judged.write_text(json.dumps({"run_id": "r", "version": "3", "decision": "rejected"}))
    assert unjudged_run(paths) is None
    assert not verdict(RULE, paths, None, NOW, stages=STAGES).judge
    lock = _lock(train=({"data/features": "f1"}, {"models/model.pt": "m2"}),
                 evaluate=({"models/model.pt": "m1"}, {"r": "r1"}))  # fmt: skip
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    finishing = verdict(RULE, paths, None, NOW, stages=STAGES)
    assert finishing.retrain and not finishing.forced
    assert finishing.reason.startswith("finishing what a stopped run left: evaluate")


@pytest.mark.parametrize(("trained", "recorded", "lines"), [
    ("f1", "f1", ["  -> trained by Prefect flow run f1"]),
    (None, "f2", ["  -> trained by Prefect flow run none: trained outside the flow (`dvc repro` "
                  "by hand)", "     recorded by Prefect flow run f2"]),
])  # fmt: skip
def test_lineage_says_who_trained_and_who_recorded(trained, recorded, lines) -> None:
    from tasks.ops.chain import flow_run_lines

    assert flow_run_lines({"trained_by": trained, "recorded_by": recorded}) == lines
