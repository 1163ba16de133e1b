"""Running the pipeline and seeing where it stands: `plumber run`, `serve`, `server`,
`push` and `status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Annotated

import typer

from flows.cli.app import JSON, RUN_EXAMPLES, SET_HELP, app, server_app
from tasks.core.config import load_params
from tasks.core.errors import StepError
from tasks.core.paths import Paths


@app.command(epilog=RUN_EXAMPLES)
def run(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="retrain whatever the retrain policy says")
    ] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", metavar="SECTION.KEY=VALUE", help=SET_HELP)
    ] = None,
) -> int:
    """Run the pipeline once as a Prefect flow.

    Collect and validate; then, if the retrain policy (schedule.retrain_when) or --force
    says so, featurize, train, evaluate and release.
    """
    from flows.runs import run_flow

    return run_flow(ctx.obj, force=force, assignments=set_ or [])


@app.command(epilog="Example: PREFECT_API_URL=http://127.0.0.1:4200/api plumber serve "
             "(with `make server` running: runs show in its UI)")  # fmt: skip
def serve(ctx: typer.Context) -> int:
    """Run the flow on its schedule until stopped. The cron is flow.serve in params.yaml."""
    from flows.runs import serve_flow

    return serve_flow(ctx.obj)


@server_app.command("start", epilog="Example: plumber server start")
def server_start(ctx: typer.Context) -> int:
    """Start the local Prefect server and its UI. It stays until `plumber server stop`."""
    from flows import local_server

    cfg = load_params(ctx.obj.params).flow.server
    url = local_server.ensure(ctx.obj, cfg, lambda line: print(line, file=sys.stderr))
    print(f"local Prefect server: {url.removesuffix('/api')} (UI); API {url}; "
          "it stays until `plumber server stop`")  # fmt: skip
    return 0


@server_app.command("stop", epilog="Example: plumber server stop")
def server_stop(ctx: typer.Context) -> int:
    """Stop the local Prefect server."""
    from flows import local_server

    stopped = local_server.stop(ctx.obj)
    print("local Prefect server stopped" if stopped else "no local Prefect server was running")
    return 0


@server_app.command("status", epilog="Example: plumber server status")
def server_status(ctx: typer.Context) -> int:
    """Where flow runs report to, and whether the local server answers."""
    from flows import local_server

    if os.environ.get("PREFECT_API_URL"):
        print(f"PREFECT_API_URL={os.environ['PREFECT_API_URL']}: runs go to that server")
    state = local_server.read_state(ctx.obj)
    if state is None:
        print(f"local Prefect server: not running (state in {local_server.folder(ctx.obj)})")
        return 0
    answers = "answering" if local_server.healthy(state["url"]) else "NOT answering"
    print(f"local Prefect server: {state['url']} (pid {state['pid']}, since "
          f"{state['started']}; {answers}; it stays until `plumber server stop`)")  # fmt: skip
    return 0


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Example: plumber push (arguments after it go to dvc push: plumber push -r s3)",
)
def push(ctx: typer.Context) -> int:
    """Verify the data, then `dvc push` it. Every DVC cache object the outputs use is
    checked first: a corrupt object is never sent."""
    from tasks.data.integrity import verify_cache

    paths: Paths = ctx.obj
    repaired, damaged = verify_cache(paths.root)
    for line in repaired:
        print(f"repaired: {line}", file=sys.stderr)
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise StepError(f"nothing was pushed: {damaged[0]}{more}")
    done = subprocess.run([sys.executable, "-m", "dvc", "push", *ctx.args], cwd=paths.root)
    return done.returncode


@app.command(epilog="Example: plumber status --json")
def status(ctx: typer.Context, as_json: JSON = False) -> int:
    """Watermarks, rows, quarantine, the champion and the last run."""
    from tasks.ops.status import format_status
    from tasks.ops.status import status as read_status

    data = read_status(ctx.obj, model_name=load_params(ctx.obj.params).release.model_name)
    print(json.dumps(data, indent=2) if as_json else format_status(data))
    return 0
