"""Secrets out of everything Plumber writes: output, logs, Prefect's database, files.

Two kinds of secret reach the process through the environment:

- passwords inside URLs (`MLFLOW_TRACKING_URI=http://user:secret@host/`, a database URL
  in `collect.sources.*.url_env`): `mask` replaces the password with `***` wherever a
  URL appears in a text;
- whole values: tokens and webhook URLs (`token_env`, `flow.notify_url_env`, and any
  variable whose name says TOKEN, PASSWORD, SECRET or KEY): replaced by `***` wherever
  they appear.

`install()` masks every log record of the process before any handler sees it (the
terminal, Prefect's API handler that stores run logs in its database, files), and the
flow masks what it stores as state messages. Stages' output passes through the flow's
log relay, so it is masked on its way too.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"
# scheme://user:password@  (the user part may be empty: scheme://:password@)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*):(?P<pw>[^\s/@]+)@")
_SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|_KEY|NOTIFY_URL|WEBHOOK)", re.I)
# Values this short are too likely to appear by chance (a "1", a "true") to mask.
_MIN_SECRET = 6

_extra_names: set[str] = set()


def declare(*names: str | None) -> None:
    """Environment variables whose whole value is secret (named by params: token_env,
    notify_url_env), beyond those whose names say so."""
    _extra_names.update(n for n in names if n)


def secret_values() -> list[str]:
    values = {
        value
        for name, value in os.environ.items()
        if (name in _extra_names or _SECRET_NAME.search(name)) and len(value) >= _MIN_SECRET
    }
    # Longest first: a secret that contains another is masked whole.
    return sorted(values, key=len, reverse=True)


def mask_urls(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", text)


def without_credentials(url: str) -> str:
    """`url` without its user name and password: the form a record, a comparison or a
    request (with the credentials passed apart) takes. `s3://key:secret@bucket/dvc` ->
    `s3://bucket/dvc`."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def mask(text: str) -> str:
    """`text` with URL passwords and secret values replaced by ***."""
    if not text:
        return text
    text = mask_urls(text)
    for value in secret_values():
        if value in text:
            text = text.replace(value, MASK)
    return text


def _masked_record_factory(factory: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = mask(text)
        return record

    make.plumber_masks = True  # type: ignore[attr-defined]
    return make


def install() -> None:
    """Mask every log record created in this process from now on (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "plumber_masks", False):
        logging.setLogRecordFactory(_masked_record_factory(factory))


def masked_error(exc: BaseException) -> BaseException:
    """The exception with a masked message: the same object when its args are plain
    text (so its type, and `Busy` for exit 75, survive), else a StepError."""
    from tasks.core.errors import StepError

    text = str(exc)
    masked = mask(text)
    if masked == text:
        return exc
    if all(isinstance(a, str) for a in exc.args):
        exc.args = tuple(mask(a) for a in exc.args)
        if str(exc) == masked:
            return exc
    return StepError(f"{type(exc).__name__}: {masked}")
