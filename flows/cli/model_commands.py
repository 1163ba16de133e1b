"""The model after training: `plumber release`, `releases`, `rollback`, `predict`,
`serve-model`, `lineage` and `reproduce`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import JSON, app
from tasks.core.config import load_params
from tasks.core.errors import ConfigError


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
    from tasks.release.rollback import rollback as move_back

    entry = move_back(load_params(ctx.obj.params), ctx.obj, reason=reason, to=to)
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
