"""`plumber stack up|down|status`: the loopback production stack (flows/stack.py)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from tasks.core.config import load_params

stack_app = typer.Typer(
    help="The production stack on loopback. MLflow and Prefect servers on PostgreSQL, an "
    "S3-compatible object store (artifacts, DVC remote), a work pool.",
    epilog="Examples: plumber stack up; export PLUMBER_STACK=$PWD/var/stack/stack.env; "
    "plumber run; plumber stack status; plumber stack down [--purge]",
    no_args_is_help=True,
)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@stack_app.command("up", epilog="Example: plumber stack up --name plumber")
def stack_up(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="names its databases and bucket")] = "plumber",
) -> int:
    """Start the stack and write its profile. What already runs is kept; the profile is
    var/stack/stack.env."""
    from flows import stack

    limit = load_params(ctx.obj.params).flow.server.start_timeout_seconds
    state = stack.up(ctx.obj, name, limit, _say)
    print(stack.format_status(stack.status(ctx.obj)))
    return 0 if state else 1


@stack_app.command("down", epilog="Example: plumber stack down; plumber stack down --purge")
def stack_down(
    ctx: typer.Context,
    purge: Annotated[bool, typer.Option(help="also drop its databases and stored objects")] = False,
) -> int:
    """Stop every service the stack started."""
    from flows import stack

    stopped = stack.down(ctx.obj, purge, _say)
    print(f"stopped: {', '.join(stopped)}" if stopped else "no stack service was running")
    return 0


@stack_app.command("status", epilog="Example: plumber stack status --json")
def stack_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> int:
    """What runs where. Each service's URL, process and health, and the profile."""
    from flows import stack

    data = stack.status(ctx.obj)
    print(json.dumps(data, indent=2) if as_json else stack.format_status(data))
    running = [s for s in data["services"].values() if s["running"]]
    return 0 if all(s["answering"] for s in running) else 1
