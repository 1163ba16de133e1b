"""The loopback stack's object store: moto's S3-compatible server, made durable.

moto keeps buckets in memory, and its own request recorder writes from many threads into
one file without a lock (lines interleave under parallel uploads, and the replay fails).
So this runs moto's WSGI application behind a journal of our own: every write that
succeeded (PUT, POST, DELETE) is appended as one JSON line, under a lock, flushed and
fsynced before the client hears back; at start the journal is replayed into the fresh
server in-process before it listens. A multipart upload gets a new id when replayed: the
ids are mapped, so its parts and its completion land on the new one.

    python -m flows.object_store HOST PORT JOURNAL
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

WRITES = ("PUT", "POST", "DELETE")
UPLOAD_ID = re.compile(rb"<UploadId>([^<]+)</UploadId>")
Environ = dict[str, Any]


class Journal:
    """Successful writes, appended durably; `replay` applies them to an application."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self.lock, self.path.open("ab") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())

    def replay(self, app: Any) -> int:
        """Apply every journalled write to `app`; returns how many. A torn last line (the
        server killed mid-append) is dropped: its client never heard it succeed."""
        from werkzeug.test import Client

        if not self.path.exists():
            return 0
        client = Client(app)
        uploads: dict[str, str] = {}  # journalled multipart upload id -> the replayed one
        count = 0
        for line in self.path.read_bytes().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            query = entry["query"]
            for old, new in uploads.items():
                query = query.replace(f"uploadId={old}", f"uploadId={new}")
            answer = client.open(
                entry["path"], method=entry["method"], query_string=query,
                headers=entry["headers"], data=base64.b64decode(entry["body"]),
            )  # fmt: skip
            if entry.get("upload_id"):
                found = UPLOAD_ID.search(answer.get_data())
                if found:
                    uploads[entry["upload_id"]] = found.group(1).decode()
            count += 1
        return count


class Journalled:
    """WSGI middleware: the writes `app` accepted go to `journal` before the answer."""

    def __init__(self, app: Any, journal: Journal) -> None:
        self.app, self.journal = app, journal

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] not in WRITES or path.startswith("/moto-api"):
            return self.app(environ, start_response)
        body = read_body(environ)
        status: list[str] = []

        def capture(code: str, headers: list[Any], exc_info: Any = None) -> Any:
            status.append(code)
            return start_response(code, headers, exc_info)

        answer = self.app(environ, capture)
        try:
            payload = b"".join(answer)
        finally:
            getattr(answer, "close", lambda: None)()
        if status and status[0].startswith("2"):
            self.journal.append(entry(environ, path, body, payload))
        return [payload]


def read_body(environ: Environ) -> bytes:
    """The request body, read once and put back for the application."""
    import io

    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def entry(environ: Environ, path: str, body: bytes, payload: bytes) -> dict[str, Any]:
    headers = {
        key[5:].replace("_", "-").title(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").title()] = environ[key]
    record = {
        "method": environ["REQUEST_METHOD"],
        "path": path,
        "query": environ.get("QUERY_STRING", ""),
        "headers": headers,
        "body": base64.b64encode(body).decode("ascii"),
    }
    found = UPLOAD_ID.search(payload) if "uploads" in record["query"] else None
    if found:
        record["upload_id"] = found.group(1).decode()
    return record


def serve(host: str, port: int, journal_path: Path) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    journal = Journal(journal_path)
    replayed = journal.replay(app)
    print(f"replayed {replayed} writes from {journal_path}", flush=True)
    run_simple(host, port, Journalled(app, journal), threaded=True,
               request_handler=MotoRequestHandler)  # fmt: skip


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
