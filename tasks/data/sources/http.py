"""Rows past a watermark from a paginated HTTP JSON API.

The API answers ``GET url?since=W&limit=N`` with ``{"items": [...], "next": URL|null}``
(field and parameter names are configurable). Connection errors, timeouts, 5xx and 429
are retried with exponential backoff and full jitter, honouring Retry-After; any other
4xx is a clear error at once, since asking again will not change the answer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin

import httpx
import pandas as pd

from tasks.core.config import HttpSource
from tasks.core.errors import SourceError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


def read_http(
    name: str,
    source: HttpSource,
    *,
    since: Any,
    page_size: int,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[pd.DataFrame]:
    """Yield one frame per page, following the API's ``next`` links."""
    headers = {"Accept": "application/json"}
    if source.token_env:
        token = os.environ.get(source.token_env)
        if token:
            headers["Authorization"] = f"Bearer {token}"
    own_client = client is None
    client = client or httpx.Client(timeout=source.timeout_seconds, headers=headers)
    params: dict[str, Any] | None = {source.limit_param: page_size}
    if since is not None and params is not None:
        params[source.since_param] = since
    url: str | None = source.url
    try:
        while url:
            body = _get_json(name, source, client, url, params, sleep)
            items = body.get(source.items_field)
            if not isinstance(items, list):
                raise SourceError(f"{name}: response has no list field {source.items_field!r}")
            if items:
                yield as_text(pd.DataFrame.from_records(items))
            next_url = body.get(source.next_field)
            url = urljoin(url, next_url) if next_url else None
            params = None  # the next link carries its own query
    finally:
        if own_client:
            client.close()


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """JSON values as text, as a CSV would give them: every page is typed alike
    whatever its values (a column of nulls would otherwise be typed differently), and
    validate parses the text to the schema's types."""

    def text(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and value != value):
            return None
        return value if isinstance(value, str) else json.dumps(value)

    return frame.astype(object).map(text).astype("str")


def _get_json(
    name: str,
    source: HttpSource,
    client: httpx.Client,
    url: str,
    params: dict[str, Any] | None,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    from tenacity import (
        RetryCallState,
        Retrying,
        retry_if_exception_type,
        retry_if_result,
        stop_after_attempt,
        wait_random_exponential,
    )

    backoff = wait_random_exponential(  # full jitter: uniform in [0, min(cap, base * 2**n)]
        multiplier=source.backoff_seconds, max=source.max_backoff_seconds
    )

    def wait(state: RetryCallState) -> float:
        answer = None if state.outcome is None or state.outcome.failed else state.outcome.result()
        asked = retry_after_seconds(answer) if answer is not None else None
        return min(asked, source.max_backoff_seconds) if asked else backoff(state)

    def say(state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        why = (type(state.outcome.exception()).__name__ if state.outcome.failed
               else f"HTTP {state.outcome.result().status_code}")  # fmt: skip
        log.warning("%s: %s (%s); retrying in %.1fs", name, url, why, state.next_action.sleep)

    attempts = source.max_retries + 1
    retrying = Retrying(
        stop=stop_after_attempt(attempts), wait=wait, sleep=sleep, before_sleep=say,
        retry=retry_if_exception_type(httpx.TransportError)  # refused, reset, timeouts
        | retry_if_result(lambda answer: answer.status_code in RETRYABLE_STATUS),
        retry_error_callback=lambda state: state.outcome,  # the last answer, judged below
    )  # fmt: skip
    outcome = retrying(lambda: client.get(url, params=params, timeout=source.timeout_seconds))
    if not isinstance(outcome, httpx.Response):  # the retries ran out: the last try's Future
        if outcome.failed:
            raise SourceError(
                f"{name}: {url} unreachable after {attempts} attempts: {outcome.exception()!r}"
            ) from None
        outcome, tried = outcome.result(), attempts
    else:
        tried = retrying.statistics.get("attempt_number", 1)
    return _json_of(name, url, outcome, tried)


def _json_of(name: str, url: str, response: httpx.Response, tried: int) -> dict[str, Any]:
    """The answer's JSON object, or a SourceError naming what is wrong with it."""
    if response.status_code >= 400:
        tries = f" after {tried} attempts" if tried > 1 else ""
        raise SourceError(
            f"{name}: HTTP {response.status_code} {response.reason_phrase} from "
            f"{response.request.url}{tries}: {response.text[:200]}"
        )
    try:
        body = response.json()
    except ValueError:
        raise SourceError(f"{name}: {url} did not answer JSON") from None
    if not isinstance(body, dict):
        raise SourceError(f"{name}: {url} answered JSON that is not an object")
    return body


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
