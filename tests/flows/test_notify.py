"""Failure notifications: the message, and a webhook that cannot be reached."""

from __future__ import annotations

import logging
import socket

from flows.notify import failure_message, post_json
from flows.stages import StageFailed


def test_message_names_the_flow_run_the_stage_and_the_error() -> None:
    error = StageFailed("train", RuntimeError("CUDA out of memory"))
    message = failure_message("brave-otter", "1234-abcd", error.stage, error.error)
    assert message["text"] == (
        "plumber flow run brave-otter (1234-abcd) failed in stage train: CUDA out of memory"
    )
    assert message["stage"] == "train" and message["flow_run"]["id"] == "1234-abcd"
    assert "before any stage" in failure_message("r", "i", None, "bad params")["text"]


def test_undeliverable_notification_is_logged_without_the_url(caplog) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook?token=s3cret"
    with caplog.at_level(logging.WARNING):
        assert post_json(url, {"text": "x"}, timeout=2) is False
    assert "not delivered" in caplog.text and "s3cret" not in caplog.text
