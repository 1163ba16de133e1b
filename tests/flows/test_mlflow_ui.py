"""The MLflow app plumber serves: its UI page carries the default layout, nothing else
changes. (A real browser from the home page: tests/test_ui.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

from flows.mlflow_ui import SCRIPT, STORAGE_KEY, DefaultLayout

PAGE = b"<!doctype html><html><head><title>MLflow</title></head><body></body></html>"


def app_answering(content_type: bytes, chunks: list[bytes]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", content_type), (b"etag", b'"file"'),
                   (b"content-length", str(sum(map(len, chunks))).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": i < len(chunks) - 1})  # fmt: skip

    return app


def get(app: Any, method: str = "GET") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/"}
    asyncio.run(DefaultLayout(app)(scope, None, send))
    return sent


def test_the_ui_page_sets_model_training_unless_the_browser_chose() -> None:
    start, body = get(app_answering(b"text/html; charset=utf-8", [PAGE[:20], PAGE[20:]]))
    page = body["body"]
    assert page.startswith(b"<!doctype html><html><head>" + SCRIPT.encode() + b"<title>")
    assert page.count(STORAGE_KEY.encode()) == 2  # read, and set only when unset
    headers = dict(start["headers"])
    assert headers[b"content-length"] == str(len(page)).encode()
    assert b"etag" not in headers  # no longer the file's bytes


def test_other_answers_pass_untouched() -> None:
    sent = get(app_answering(b"application/json", [b'{"a": 1}']))
    assert sent[1]["body"] == b'{"a": 1}' and dict(sent[0]["headers"])[b"etag"] == b'"file"'
    posted = get(app_answering(b"text/html", [PAGE]), method="POST")
    assert posted[1]["body"] == PAGE
