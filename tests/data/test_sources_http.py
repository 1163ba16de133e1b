"""The HTTP connector against real local servers that misbehave in known ways."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from tasks.core.config import HttpSource
from tasks.core.errors import SourceError
from tasks.data.sources.http import read_http

Respond = Callable[[int, dict[str, str]], tuple[int, dict[str, str], Any]]


@pytest.fixture
def server() -> Iterator[Callable[[Respond], tuple[str, list[dict[str, Any]]]]]:
    """Start a loopback server whose answer to the n-th request is ``respond(n, query)``."""
    started: list[ThreadingHTTPServer] = []

    def start(respond: Respond) -> tuple[str, list[dict[str, Any]]]:
        requests: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = {k: v[-1] for k, v in parse_qs(urlparse(self.path).query).items()}
                requests.append(
                    {"path": self.path, "query": query, "auth": self.headers.get("Authorization")}
                )
                status, headers, body = respond(len(requests), query)
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/weather", requests

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def http_source(url: str, **overrides: Any) -> HttpSource:
    spec = {"kind": "http", "url": url, "key": ["origin", "time_hour"], "watermark": "updated_at",
            "partition_by": "time_hour", "schema": "weather", "max_retries": 3,
            "backoff_seconds": 0.01, "timeout_seconds": 2, **overrides}  # fmt: skip
    return HttpSource.model_validate(spec)


ROWS = [{"origin": "EWR", "time_hour": f"2013-03-01T{h:02d}:00:00Z", "updated_at": "2013-03-02T05:00:00Z"}
        for h in range(5)]  # fmt: skip


def pages(n: int, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    offset, limit = int(query.get("offset", 0)), int(query["limit"])
    nxt = f"/weather?limit={limit}&offset={offset + limit}" if offset + limit < len(ROWS) else None
    return 200, {}, {"items": ROWS[offset : offset + limit], "next": nxt}


def read(src: HttpSource, since: Any = None, sleeps: list[float] | None = None) -> list[dict]:
    sleep = sleeps.append if sleeps is not None else lambda s: None
    frames = read_http("weather_api", src, since=since, page_size=2, sleep=sleep)
    return [row for frame in frames for row in frame.to_dict(orient="records")]


def test_pagination_and_since(server) -> None:
    url, requests = server(pages)
    assert read(http_source(url), since="2013-03-01T00:00:00Z") == ROWS
    assert [r["query"].get("offset", "0") for r in requests] == ["0", "2", "4"]
    assert requests[0]["query"] == {"limit": "2", "since": "2013-03-01T00:00:00Z"}


def test_fails_twice_then_answers(server) -> None:
    url, requests = server(lambda n, q: (503, {}, {"error": "busy"}) if n <= 2 else pages(n, q))
    sleeps: list[float] = []
    assert read(http_source(url), sleeps=sleeps) == ROWS
    assert len(requests) == 5 and len(sleeps) == 2  # two retries, then three pages


def test_429_honours_retry_after(server) -> None:
    url, requests = server(
        lambda n, q: (429, {"Retry-After": "1.5"}, {}) if n == 1 else pages(n, q)
    )
    sleeps: list[float] = []
    assert read(http_source(url), sleeps=sleeps) == ROWS
    assert sleeps == [1.5]


def test_404_is_a_clear_error_at_once(server) -> None:
    url, requests = server(lambda n, q: (404, {}, {"error": "no such resource"}))
    with pytest.raises(
        SourceError, match=r"weather_api: HTTP 404 Not Found from http://127\.0\.0\.1"
    ):
        read(http_source(url))
    assert len(requests) == 1  # not retried


def test_persistent_5xx_gives_up_with_the_count(server) -> None:
    url, requests = server(lambda n, q: (500, {}, {}))
    with pytest.raises(SourceError, match="HTTP 500 .* after 4 attempts"):
        read(http_source(url))
    assert len(requests) == 4


def test_connection_refused_is_retried_then_named() -> None:
    sleeps: list[float] = []
    with pytest.raises(SourceError, match="unreachable after 4 attempts"):
        read(http_source("http://127.0.0.1:1/weather"), sleeps=sleeps)
    assert len(sleeps) == 3


def test_bearer_token_from_the_environment(server, monkeypatch) -> None:
    url, requests = server(pages)
    monkeypatch.setenv("PLUMBER_TEST_TOKEN", "s3cret")
    read(http_source(url, token_env="PLUMBER_TEST_TOKEN"))
    assert requests[0]["auth"] == "Bearer s3cret"


def test_not_a_list_of_items(server) -> None:
    url, _ = server(lambda n, q: (200, {}, {"rows": []}))
    with pytest.raises(SourceError, match="no list field 'items'"):
        read(http_source(url))


def test_json_values_arrive_as_text(server) -> None:
    rows = [{"origin": "EWR", "temp": 39.02, "wind_dir": 270, "wind_gust": None}]
    url, _ = server(lambda n, q: (200, {}, {"items": rows, "next": None}))
    [frame] = list(read_http("weather_api", http_source(url), since=None, page_size=5))
    assert frame.iloc[0].tolist()[:3] == ["EWR", "39.02", "270"] and pd.isna(
        frame.iloc[0]["wind_gust"]
    )
    assert all(str(t) == "str" for t in frame.dtypes)


def test_the_waits_grow_with_full_jitter_up_to_the_cap(server) -> None:
    url, _ = server(lambda n, q: (503, {}, {}))  # a source that stays down
    source = http_source(url, max_retries=6, backoff_seconds=0.5, max_backoff_seconds=4.0)
    waits: list[float] = []
    with pytest.raises(SourceError, match="HTTP 503 .* after 7 attempts"):
        list(read_http("weather_api", source, since=None, page_size=5, sleep=waits.append))
    assert len(waits) == 6
    assert all(0 <= wait <= min(4.0, 0.5 * 2**n) for n, wait in enumerate(waits)), waits
