"""Secrets out of every text Plumber writes: URL passwords and token values are masked in
messages and in every log record, whatever handler stores it."""

from __future__ import annotations

import logging

import pytest

from tasks.core import secrets
from tasks.core.errors import Busy, StepError


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("http://user:s3cret@127.0.0.1:9/api", "http://user:***@127.0.0.1:9/api"),
        ("postgresql+psycopg://app:p%40ss@db:5432/x failed", "postgresql+psycopg://app:***@db:5432/x failed"),
        ("redis://:onlypw@host/0", "redis://:***@host/0"),
        ("no url here; http://host/path?a=b@c", "no url here; http://host/path?a=b@c"),
        ("two: http://a:b1@h/ and s3://k:s2@bucket/", "two: http://a:***@h/ and s3://k:***@bucket/"),
    ],
)  # fmt: skip
def test_url_passwords_are_masked(text: str, masked: str) -> None:
    assert secrets.mask(text) == masked


def test_token_values_are_masked_by_variable_name_or_declaration(monkeypatch) -> None:
    monkeypatch.setenv("PLUMBER_WEATHER_API_TOKEN", "tok-123456789")
    monkeypatch.setenv("MY_HOOK", "https://hooks.example.com/T000/B000/XXXX")
    monkeypatch.setenv("PLUMBER_LOG_FORMAT", "short")  # not a secret: left alone
    secrets.declare("MY_HOOK")
    text = "GET with tok-123456789 to https://hooks.example.com/T000/B000/XXXX, format short"
    assert secrets.mask(text) == "GET with *** to ***, format short"


def test_every_log_record_is_masked_before_any_handler_sees_it(caplog) -> None:
    secrets.install()
    secrets.install()  # idempotent
    log = logging.getLogger("tasks.test_secrets")
    with caplog.at_level(logging.INFO):
        log.info("tracking at %s", "http://u:hunter22@mlflow:5000")
        try:
            raise RuntimeError("cannot reach http://u:hunter22@mlflow:5000/api")
        except RuntimeError:
            log.exception("failed")
    assert "hunter22" not in caplog.text
    assert "http://u:***@mlflow:5000" in caplog.text
    assert "cannot reach http://u:***@mlflow:5000/api" in caplog.text  # the traceback too


def test_a_masked_error_keeps_its_type_when_it_can() -> None:
    busy = secrets.masked_error(Busy("held by http://u:pw1234@h/"))
    assert isinstance(busy, Busy) and str(busy) == "held by http://u:***@h/"
    odd = secrets.masked_error(KeyError("http://u:pw1234@h/"))  # its str() adds quotes
    assert isinstance(odd, StepError | KeyError) and "pw1234" not in str(odd)
    plain = ValueError("nothing secret")
    assert secrets.masked_error(plain) is plain
