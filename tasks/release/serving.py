"""The served model over HTTP: `plumber serve-model` loads a registered version (the
champion by default) once, and scores raw joined rows posted as JSON.

    GET  /ping          200 "ok" once the model is loaded
    GET  /health        {"model", "version", "run_id", "columns"}: what is served, and its input
    POST /invocations   {"dataframe_split": {"columns": [...], "data": [[...], ...]}}
                        or {"dataframe_records": [{column: value, ...}, ...]}
                        -> {"predictions": [{"probability": 0.31, "warn": false,
                                             "unknown": ["origin: LAX"]}, ...]}
    GET  /invocations   405, Allow: POST

The request formats are MLflow's, so a client can move between this and `mlflow models
serve`. What this adds: optional columns may be left out (scored as missing), and a bad
request is answered 400 with one JSON message naming the problem ({"error_code":
"BAD_REQUEST", "message": "missing required column(s): year, distance"}; a required value
left empty, a value out of its range, a date that does not exist), never a traceback or a
path of the server's; and each prediction lists the codes the model never trained on
(`unknown`: scored as an unseen value), whose rows are counted in the server's log.
The pure parts (`parse`, `score`) are tested without a socket.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd

from tasks.ml import columns
from tasks.ml.features import conform
from tasks.ml.inference import plain_rows

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024  # a request larger than this is refused, not read
FORMATS = ("dataframe_split", "dataframe_records")


class BadRequest(ValueError):
    """What is wrong with a request, in words a caller can act on."""


def parse(body: bytes) -> pd.DataFrame:
    """The rows of a request body, or BadRequest saying what is wrong with it."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    found = [key for key in FORMATS if isinstance(payload, dict) and key in payload]
    if len(found) != 1:
        raise BadRequest(f"the body must be a JSON object with one of {', '.join(FORMATS)}")
    value = payload[found[0]]
    if found[0] == "dataframe_split":
        if not isinstance(value, dict) or not isinstance(value.get("columns"), list) \
                or not isinstance(value.get("data"), list):  # fmt: skip
            raise BadRequest('dataframe_split needs "columns" (names) and "data" (rows)')
        names = value["columns"]
        twice = sorted({str(c) for c in names if names.count(c) > 1})
        if twice:
            raise BadRequest(f"column(s) named twice: {', '.join(twice)}")
        width = len(names)
        bad = [i for i, row in enumerate(value["data"]) if not isinstance(row, list)
               or len(row) != width]  # fmt: skip
        if bad:
            raise BadRequest(f"dataframe_split: row {bad[0]} does not have the {width} "
                             "values its columns name")  # fmt: skip
        return pd.DataFrame(value["data"], columns=value["columns"])
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise BadRequest("dataframe_records must be a list of objects, one per row")
    return pd.DataFrame.from_records(value)


# The values a served row may hold, as validate holds every collected row to them
# (tasks/data/schemas.py: flights): a value outside is the caller's error, not the model's.
RANGES = {"month": (1, 12), "day": (1, 31), "hour": (0, 23), "minute": (0, 59),
          "distance": (1, 10000)}  # fmt: skip
# Codes the model looks up in its vocabularies: one it never trained on is scored as
# "unknown", and the answer says so.
LOOKED_UP = ("carrier", "origin", "dest")


def score(model: Any, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The model's prediction per row, with the codes it did not know (`unknown`: scored
    as an unseen value); BadRequest naming a missing column or a bad value."""
    if rows.empty:
        raise BadRequest("no rows to score")
    try:
        typed = conform(rows)
    except ValueError as exc:  # conform names the column and the value
        raise BadRequest(str(exc)) from None
    check_values(typed)
    scored = model.predict(plain_rows(typed))
    unknown = unknown_codes(typed, known_codes(model))
    if any(unknown):
        log.warning(
            "%d of %d row(s) hold codes the model never trained on",
            sum(map(bool, unknown)),
            len(unknown),
        )
    pairs = zip(scored["probability"], scored["warn"], unknown, strict=True)
    return [{"probability": float(p), "warn": bool(w), "unknown": u} for p, w, u in pairs]


def check_values(rows: pd.DataFrame) -> None:
    """BadRequest naming the first column, row and value that no flight can have: a
    required column left empty, a value out of its range, a date that does not exist."""
    for column, (_, optional) in columns.INPUT.items():
        empty = rows[column].isna().to_numpy()
        if not optional and empty.any():
            raise BadRequest(f"column {column}: row {int(empty.argmax())} is empty, and the "
                             f"column is required")  # fmt: skip
    for column, (low, high) in RANGES.items():
        outside = ~rows[column].between(low, high).to_numpy()
        if outside.any():
            row = int(outside.argmax())
            raise BadRequest(f"column {column}: {rows[column].iloc[row]} (row {row}) is out of "
                             f"range [{low}, {high}]")  # fmt: skip
    dates = pd.to_datetime(rows[["year", "month", "day"]], errors="coerce").isna().to_numpy()
    if dates.any():
        row = int(dates.argmax())
        year, month, day = (int(rows[c].iloc[row]) for c in ("year", "month", "day"))
        raise BadRequest(f"row {row}: {year}-{month:02d}-{day:02d} (year, month, day) is not "
                         "a date")  # fmt: skip


def known_codes(model: Any) -> dict[str, set[str]]:
    """The codes the model's encoders hold per looked-up column (none known: empty)."""
    try:
        encoders = model.unwrap_python_model().encoders
    except AttributeError:  # not plumber's packaged model
        return {}
    return {column: set(encoders.vocab.get(column, [])) for column in LOOKED_UP}


def unknown_codes(rows: pd.DataFrame, known: dict[str, set[str]]) -> list[list[str]]:
    """Per row, 'column: value' for each looked-up code the model never trained on."""
    found: list[list[str]] = [[] for _ in range(len(rows))]
    for column, codes in known.items():
        for row, value in enumerate(rows[column].tolist()):
            if value is not None and value == value and value not in codes:
                found[row].append(f"{column}: {value}")
    return found


@dataclass(frozen=True)
class Served:
    model: Any
    name: str
    version: str
    run_id: str

    def health(self) -> dict[str, Any]:
        return {"model": self.name, "version": self.version, "run_id": self.run_id,
                "columns": columns.described()}  # fmt: skip


def handler_for(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "plumber-serve-model"

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._send(HTTPStatus.OK, "ok", "text/plain")
            elif self.path == "/health":
                self._json(HTTPStatus.OK, served.health())
            elif self.path == "/invocations":
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED",
                            "POST /invocations with a JSON body (GET /health lists the "
                            "columns)", allow="POST")  # fmt: skip
            else:
                self._error(HTTPStatus.NOT_FOUND, "NOT_FOUND",
                            f"no {self.path}: GET /ping, /health; POST /invocations")  # fmt: skip

        def do_POST(self) -> None:
            if self.path != "/invocations":
                self._error(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no {self.path}: POST /invocations")
                return
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "BAD_REQUEST",
                            "send Content-Type: application/json")  # fmt: skip
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                limit = f"the body is over {MAX_BODY_BYTES // 2**20} MiB: send fewer rows"
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "BAD_REQUEST", limit)
                return
            try:
                predictions = score(served.model, parse(self.rfile.read(length)))
            except BadRequest as exc:
                self._error(HTTPStatus.BAD_REQUEST, "BAD_REQUEST", str(exc))
            except Exception:  # the model failed on valid rows: logged here, named there
                log.exception("scoring failed")
                why = "the model could not score these rows; the server's log says why"
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", why)
            else:
                self._json(HTTPStatus.OK, {"predictions": predictions})

        def _error(
            self, status: HTTPStatus, code: str, message: str, allow: str | None = None
        ) -> None:
            self._json(status, {"error_code": code, "message": message}, allow)

        def _json(
            self, status: HTTPStatus, payload: dict[str, Any], allow: str | None = None
        ) -> None:
            self._send(status, json.dumps(payload), "application/json", allow)

        def _send(self, status: HTTPStatus, text: str, kind: str, allow: str | None = None) -> None:
            body = text.encode()
            self.send_response(status)
            if allow:
                self.send_header("Allow", allow)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

    return Handler


def load(paths: Any, name: str, version: str = "champion") -> Served:
    """A registered version (a number, or an alias such as `champion`), loaded once."""
    import mlflow

    from tasks.core.errors import NotFound
    from tasks.release import registry

    client = registry.connect(paths)
    try:
        got = (client.get_model_version(name, version) if version.isdigit()
               else client.get_model_version_by_alias(name, version))  # fmt: skip
    except mlflow.exceptions.MlflowException:
        raise NotFound(f"{name} has no version or alias {version!r}: see `plumber releases`"
                        ) from None  # fmt: skip
    model = mlflow.pyfunc.load_model(f"models:/{name}/{got.version}")
    return Served(model, name, str(got.version), str(got.run_id))


def serve(served: Served, host: str, port: int, ready: threading.Event | None = None) -> None:
    """Answer requests until Ctrl-C or SIGTERM (then return), or until interrupted."""
    import signal

    with ThreadingHTTPServer((host, port), handler_for(served)) as server:
        log.info("serving %s version %s on http://%s:%d", served.name, served.version,
                 host, server.server_address[1])  # fmt: skip

        def stop(signum: int, frame: object) -> None:
            # shutdown() waits for serve_forever's loop: from another thread, never this one.
            threading.Thread(target=server.shutdown, daemon=True).start()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, stop)
        if ready is not None:
            ready.set()
        server.serve_forever()
    log.info("stopped serving %s version %s", served.name, served.version)
