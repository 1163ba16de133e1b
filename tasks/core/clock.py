"""The one clock: every time Plumber records is UTC, and written to the second in ISO 8601."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp() -> str:
    """Now as recorded in files, tags and history entries: 2026-11-25T02:10:45+00:00."""
    return now().isoformat(timespec="seconds")
