"""Progress: bars on a terminal, events for the flow to draw, nothing in logs."""

from __future__ import annotations

import io
import json

import pytest

from tasks.core import progress
from tasks.core.progress import Bars, Progress


def test_off_when_nobody_watches(monkeypatch, capsys) -> None:
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    assert progress.mode() == "off"  # pytest's stderr is not a terminal
    with Progress("train", total=3, unit="epoch") as bar:
        bar.update(1, valid_pr_auc="0.61")
    assert capsys.readouterr().err == ""


def test_events_for_the_flow_to_draw(monkeypatch, capsys) -> None:
    monkeypatch.setenv(progress.MODE_ENV, "events")
    with Progress("collect flights", unit="rows") as bar:
        bar.update(5000)
    lines = capsys.readouterr().err.splitlines()
    events = [json.loads(line.removeprefix(progress.EVENT_PREFIX)) for line in lines]
    assert [e["event"] for e in events] == ["start", "update", "close"]
    assert events[1] == {"desc": "collect flights", "event": "update", "n": 5000, "postfix": {}}


def test_the_flow_draws_the_events_and_lets_other_lines_through(monkeypatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr("sys.stderr", screen)
    bars = Bars()
    start = {"desc": "train", "event": "start", "total": 2, "unit": "epoch"}
    update = {"desc": "train", "event": "update", "n": 1, "postfix": {"valid_pr_auc": "0.6"}}
    assert bars.handle(progress.EVENT_PREFIX + json.dumps(start))
    assert bars.handle(progress.EVENT_PREFIX + json.dumps(update))
    assert not bars.handle("INFO tasks.train: epoch 1")
    assert bars.handle(progress.EVENT_PREFIX + json.dumps({"desc": "train", "event": "close"}))
    drawn = screen.getvalue()
    assert "train:  50%" in drawn and "1/2" in drawn and "valid_pr_auc=0.6" in drawn


@pytest.mark.parametrize("value", ["events", "off", "tty"])
def test_the_mode_can_be_forced(monkeypatch, value: str) -> None:
    monkeypatch.setenv(progress.MODE_ENV, value)
    assert progress.mode() == value
