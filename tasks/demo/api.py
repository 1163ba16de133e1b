"""The demo weather API: the visible weather (the drop folder's files) over HTTP JSON.

    GET /weather?since=ISO&limit=N&offset=K  ->  {"items": [...], "next": "/weather?..."|null}
    GET /health                              ->  {"status": "ok", "now": "2013-07-01"}

Rows are ordered by (updated_at, origin, time_hour) and ``since`` keeps rows with
``updated_at >= since``; new rows only ever arrive with a later updated_at, so offset
pages stay stable while the clock advances.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pandas as pd

log = logging.getLogger(__name__)

MAX_LIMIT = 10_000


class WeatherStore:
    """The drop folder read as one frame, reloaded when its listing changes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._listing: tuple[tuple[str, int], ...] = ()
        self._frame = pd.DataFrame()

    def frame(self) -> pd.DataFrame:
        files = sorted(self.folder.glob("weather_*.csv"))
        listing = tuple((f.name, f.stat().st_mtime_ns) for f in files)
        with self._lock:
            if listing != self._listing:
                frames = [pd.read_csv(f) for f in files]
                frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
                if len(frame):
                    frame = frame.sort_values(
                        ["updated_at", "origin", "time_hour"], kind="mergesort"
                    )
                self._frame, self._listing = frame.reset_index(drop=True), listing
            return self._frame


def page(frame: pd.DataFrame, since: str | None, limit: int, offset: int) -> dict[str, Any]:
    """One page of rows as JSON-ready records, with the link to the next page."""
    rows = frame
    if since is not None and len(rows):
        cutoff = pd.Timestamp(since)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        rows = rows[pd.to_datetime(rows["updated_at"], utc=True) >= cutoff]
    chunk = rows.iloc[offset : offset + limit]
    items = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
        for rec in chunk.to_dict(orient="records")
    ]
    next_link = None
    if offset + limit < len(rows):
        query = {"limit": limit, "offset": offset + limit, **({"since": since} if since else {})}
        next_link = f"/weather?{urlencode(query)}"
    return {"items": items, "next": next_link, "total": len(rows)}


def make_server(
    folder: Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None
) -> ThreadingHTTPServer:
    store = WeatherStore(folder)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                return self._send(401, {"error": "missing or wrong bearer token"})
            if url.path == "/health":
                return self._send(200, {"status": "ok"})
            if url.path != "/weather":
                return self._send(404, {"error": f"no such resource {url.path}"})
            try:
                limit = min(int(query.get("limit", 1000)), MAX_LIMIT)
                offset = int(query.get("offset", 0))
                if limit < 1 or offset < 0:
                    raise ValueError
                since = query.get("since")
                if since is not None:
                    pd.Timestamp(since)
            except ValueError:
                return self._send(400, {"error": "limit, offset or since is malformed"})
            return self._send(200, page(store.frame(), since, limit, offset))

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the demo API serves on loopback only")
    return ThreadingHTTPServer((host, port), Handler)
