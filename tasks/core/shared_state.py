"""Small records every machine of a stack reads and writes: the latest flow run.

They live in the lock server's database (PLUMBER_LOCKS_URL, from the profile), in one
table of named JSON values, so a worker that never saw the last run (another machine, a
fresh clone) reads what it was and how it ended, as `var/last_run.json` tells one
checkout. A value is written whole in one statement: a reader sees the old one or the new.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks.core.errors import StepError
from tasks.core.shared_locks import LOCKS_ENV, NAMESPACE, connect, key

TABLE = "plumber_state"


def read(url: str, name: str) -> dict[str, Any] | None:
    """The value recorded as `name`, or None when none is."""
    with _open(url, f"reading {name}") as conn:
        row = conn.execute(f"SELECT value FROM {TABLE} WHERE name = %s", (name,)).fetchone()
    return None if row is None else dict(row[0])


def write(url: str, name: str, value: dict[str, Any]) -> None:
    """Record `value` as `name`, replacing what was there."""
    with _open(url, f"writing {name}") as conn:
        conn.execute(
            f"INSERT INTO {TABLE} (name, value, updated) VALUES (%s, %s::jsonb, now()) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated = now()",
            (name, json.dumps(value)),
        )


def update(url: str, name: str, changes: dict[str, Any], *, if_id: str) -> bool:
    """Merge `changes` into the value `name` if its "id" is `if_id`; whether it was."""
    with _open(url, f"updating {name}") as conn:
        done = conn.execute(
            f"UPDATE {TABLE} SET value = value || %s::jsonb, updated = now() "
            "WHERE name = %s AND value->>'id' = %s",
            (json.dumps(changes), name, if_id),
        )
        return bool(done.rowcount)


@contextmanager
def _open(url: str, what: str) -> Iterator[Any]:
    """A connection to the lock server with the table in place; closed on leaving."""
    conn = connect(url, what)
    try:
        _create_table(conn)
        yield conn
    finally:
        conn.close()


def _create_table(conn: Any) -> None:
    import psycopg

    try:
        # Two machines creating it at once would collide in PostgreSQL's catalog: one at a
        # time, under a transaction-scoped advisory lock of its own.
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s::int4, %s::int4)",
                         (NAMESPACE, key(f"table {TABLE}")))  # fmt: skip
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (name text PRIMARY KEY, "
                "value jsonb NOT NULL, updated timestamptz NOT NULL DEFAULT now())"
            )
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StepError(f"the lock server ({LOCKS_ENV}) refused its state table: {first}") from None
