"""The MLflow server as plumber runs it: MLflow's own app, whose UI opens in its
model-training layout for a browser that has not chosen one.

MLflow 3.17's UI picks its layout from the page's `?workflowType=` and otherwise from the
browser's local storage (`mlflow.workflowType_v1`, set by the GenAI / Model training switch
in its sidebar), defaulting to GenAI: the experiment's `mlflow.experimentKind` tag is not
read (its `useExperimentKind` hook returns the workflow type whenever workflow navigation
is on, which this build hard-codes). A newcomer coming from the home page so saw Traces
and Judges and no Model registry. No server setting changes that default, so this app,
started through MLflow's own plugin point (`mlflow server --app-name plumber`, the entry
point in pyproject.toml), writes the choice into the page before MLflow's scripts read it,
only where the browser holds none: a user who switches to GenAI keeps that.
tests/test_ui.py starts from an empty browser profile at the home page and clicks through,
so a change of that key in a later MLflow fails there.
"""

from __future__ import annotations

from typing import Any

STORAGE_KEY = "mlflow.workflowType_v1"  # MLflow UI: useLocalStorage(key, version 1)
DEFAULT_LAYOUT = "machine_learning"
CHOICE = f"localStorage.setItem('{STORAGE_KEY}', JSON.stringify('{DEFAULT_LAYOUT}'))"
SCRIPT = f"<script>try{{if(!localStorage.getItem('{STORAGE_KEY}')){CHOICE}}}catch(e){{}}</script>"
SCRIPT_BYTES = SCRIPT.encode()

Scope = dict[str, Any]


def with_default_layout(html: bytes) -> bytes:
    """The UI's page with the default layout set first thing in its head."""
    return html.replace(b"<head>", b"<head>" + SCRIPT_BYTES, 1) if b"<head>" in html else html


class DefaultLayout:
    """ASGI middleware: the UI's HTML page (text/html answers) goes out through
    `with_default_layout`; every other answer passes untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                kind = dict(message.get("headers", [])).get(b"content-type", b"")
                if not kind.startswith(b"text/html"):
                    start["pass"] = True
                    await send(message)
                    return
                start.update(message)
                return
            if start.get("pass"):
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page = with_default_layout(b"".join(body))
            # Not the file's bytes any more: its length, tag and date would mislead caches.
            stale = (b"content-length", b"etag", b"last-modified")
            kept = [(k, v) for k, v in start["headers"] if k.lower() not in stale]
            kept.append((b"content-length", str(len(page)).encode()))
            await send({**start, "headers": kept})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, capture)


def create_app() -> Any:
    """MLflow's server app (FastAPI over its Flask app), its UI opening in Model training."""
    from mlflow.server.fastapi_app import app

    return DefaultLayout(app)
