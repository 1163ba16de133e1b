"""Running the flow from the command line: once (`plumber run`) or on its schedule
(`plumber serve`), against the local Prefect server under var/ or PREFECT_API_URL.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks.core.config import Params, load_params
from tasks.core.entry import raise_stopped
from tasks.core.errors import PlumberError, StepError, Stopped, report
from tasks.core.paths import Paths


def run_flow(paths: Paths, *, force: bool, assignments: list[str]) -> int:
    """`plumber run`: the flow once, against the local Prefect server or PREFECT_API_URL;
    its outcome as one line and an exit code (0, 1, 2 bad params, 75 busy, 128+N signal)."""
    params = load_params(paths.params)  # a bad params.yaml fails here, before Prefect starts
    from flows.overrides import changes_of, check, parse_assignments

    overrides = changes_of(parse_assignments(assignments))
    check(paths.params, overrides)  # a bad --set is exit 2 here, before the flow starts
    from tasks.core.locks import run_lock

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # A log handler that fails (Prefect's, sending lines to a server that stopped
    # answering) stays quiet rather than printing "--- Error logging to API ---" blocks: the
    # run's one line says what happened, and var/prefect/plumber.log keeps every line.
    logging.raiseExceptions = False
    # Fail fast when another run holds the repository, before starting anything.
    with run_lock(paths, params.flow.lock_timeout_seconds, say), prefect_api(paths, params):
        from prefect.exceptions import TerminationSignal

        from flows.pipeline import pipeline
        from flows.process import signal_name

        # Prefect turns SIGTERM into a crashed run (its hooks record it), then sends the
        # signal again to the handler it found: this one, which ends the command cleanly.
        signal.signal(signal.SIGTERM, raise_stopped)
        try:
            state = pipeline(
                root=str(paths.root), force=force, overrides=overrides or None,
                return_state=True,
            )  # fmt: skip
        except (TerminationSignal, Stopped) as exc:
            signum = exc.signum if isinstance(exc, Stopped) else int(exc.signal)
            say(f"stopped: {signal_name(signum)} received; the run is recorded as crashed "
                "and the next run finishes what it left")  # fmt: skip
            return 128 + signum
        except Exception as exc:
            if not _server_gone(exc):
                raise
            _exit_now(report(StepError(_record_server_gone(paths, type(exc).__name__))))
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


def _record_server_gone(paths: Paths, error: str) -> str:
    """The run's end when the Prefect server stopped answering: its hooks could not run,
    so its record is written here (CRASHED, saying why, with the release's decision when
    it made one); the next run sets that end in Prefect (flows/run_hooks.py). Returns
    the line to print."""
    import datetime as dt

    from flows.run_hooks import record_end
    from tasks.core.io import read_json
    from tasks.ops import last_run

    server = os.environ.get("PREFECT_API_URL", "").removesuffix("/api")
    retries = os.environ.get("PREFECT_CLIENT_MAX_RETRIES")
    line = (f"the Prefect server at {server} stopped answering during the run ({error}, "
            f"after {retries} retries: flow.server_retries)")  # fmt: skip
    mine = last_run.read(paths) or {}
    if mine.get("state") != last_run.RUNNING or mine.get("pid") != os.getpid():
        return line + "; `plumber status` shows what it did"
    started = dt.datetime.fromisoformat(mine["started"]).timestamp()
    judged = paths.judged
    decision = None
    if judged.exists() and judged.stat().st_mtime >= started:  # the release ran in this run
        decision = read_json(judged).get("decision")
    record_end(paths, mine["id"], mine["name"], last_run.CRASHED, line, decision=decision)
    done = f"the release decided: {decision}; " if decision else ""
    return (
        f"{line}; {done}flow run {mine['name']} is recorded as crashed, in Prefect by "
        "the next run; `plumber status` shows what it did"
    )


def _exit_now(code: int) -> None:
    """End the process at once. At a normal exit Prefect's services would try to deliver
    every event and log line still queued to the server that is gone, one timeout each (a
    minute and more of warnings after the run's last line). Its locks are the operating
    system's and the lock server's, which end with the process; the log file is flushed."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _server_gone(exc: BaseException) -> bool:
    """Whether `exc` is Prefect's client giving up on a server that does not answer."""
    import httpx

    seen: BaseException | None = exc
    while seen is not None:  # Prefect wraps the transport's error at times
        if isinstance(seen, httpx.TransportError | ConnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
        try:
            local_server.prune_history(url, params.flow.server.keep_runs)
        except Exception as exc:  # pruning is housekeeping: never fail a run for it
            say(f"note: could not prune the local Prefect history ({type(exc).__name__})")


def format_run(report: dict[str, Any], paths: Paths) -> str:
    """The run for people: stages, the retrain verdict, evaluation, the release."""
    # The stage outcomes as the run summary and Prefect's states name them.
    lines = [f"  {r['stage']:<12}{r['outcome']:<22}{r['seconds']:.1f}s" for r in report["stages"]]
    rows = report["rows"]
    from flows.summary import describe_rows

    lines.append(f"rows: {describe_rows(rows)}; quarantined: {rows['quarantined']:,}")
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


def serve_flow(paths: Paths) -> int:
    """`plumber serve`: the scheduled deployment, until stopped."""
    from flows import deployment

    params = load_params(paths.params)
    serve = params.flow.serve
    with prefect_api(paths, params):
        print(
            f"serving deployment plumber/{serve.name}: cron '{serve.cron}' ({serve.timezone}), "
            f"one run at a time (overlap: {serve.overlap}); runs at "
            f"{os.environ['PREFECT_API_URL'].removesuffix('/api')}; Ctrl-C stops"
        )
        deployment.serve(serve, paths.root)
    return 0
