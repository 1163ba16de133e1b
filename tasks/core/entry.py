"""What every ``python -m tasks.<step>`` shares: logging set-up and error exits.

Expected failures (bad params, an unreachable source, data that fails its checks) end
with one line naming the problem and a non-zero exit, not a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tasks.core.errors import DiskFull, PlumberError, StepError, Stopped, is_disk_full, report

# The flow runs each stage with this set to a format without a timestamp: it re-logs the
# stage's lines through Prefect, which stamps them itself.
LOG_FORMAT_ENV = "PLUMBER_LOG_FORMAT"


def raise_stopped(signum: int, frame: object) -> None:
    """A signal handler: SIGTERM becomes Stopped, raised where the process is. Later ones
    are ignored, so the clean-up the first one started is not cut short (a process group
    often gets it twice: from the flow and from the stage's guard); SIGKILL still ends it."""
    signal.signal(signum, signal.SIG_IGN)
    raise Stopped(signum)


def configure_logging(level: int = logging.INFO) -> None:
    from tasks.core import secrets

    secrets.install()  # no URL password or token in any log line
    default = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        level=level, format=os.environ.get(LOG_FORMAT_ENV, default), stream=sys.stderr
    )
    # A line per HTTP request, or per credential lookup of the S3 client, otherwise.
    for chatty in ("httpx", "botocore", "aiobotocore", "s3fs"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def stage_main(name: str, doc: str, work: Callable[[], object], argv: list[str] | None) -> int:
    """`python -m tasks.<name>`: --help from the module's docstring, then the work."""
    import argparse

    argparse.ArgumentParser(
        prog=f"python -m tasks.{name}", description=doc.split("\n")[0]
    ).parse_args(argv)
    return run_step(work, stage=name)


@contextmanager
def stage_lock(stage: str) -> Iterator[None]:
    """Hold var/stage.lock while a stage runs: two stages never run at once, whoever
    started them (the flow, or a `dvc repro` by hand during a flow run)."""
    from tasks.core.config import load_params
    from tasks.core.locks import exclusive
    from tasks.core.paths import Paths

    paths = Paths.at()
    timeout = load_params(paths.params).flow.lock_timeout_seconds
    with exclusive(
        paths.lock("stage"), timeout=timeout, what=f"the {stage} stage",
        setting="flow.lock_timeout_seconds",
        say=lambda line: print(f"{line}", file=sys.stderr, flush=True),
    ):  # fmt: skip
        yield


def run_step(step: Callable[[], object], stage: str | None = None) -> int:
    """Run a step: expected failures are one line and an exit code, SIGTERM a clean stop."""
    from tasks.core.profile import load_profile

    configure_logging()
    signal.signal(signal.SIGTERM, raise_stopped)
    try:
        load_profile()  # a step started by hand (`dvc repro`) talks to the same stack
        if stage is None:
            step()
        else:
            with stage_lock(stage):
                step()
    except Stopped as exc:
        print(f"stopped: {exc} before the step finished", file=sys.stderr)
        return 128 + exc.signum
    except PlumberError as exc:
        return report(exc)
    except OSError as exc:
        if not is_disk_full(exc):
            raise  # a bug or an unexpected failure: its traceback
        return report(DiskFull.of(exc))
    except Exception as exc:
        return report(explained(exc))
    return 0


def explained(exc: Exception) -> PlumberError:
    """An outage a library words poorly, as one line naming what is down; else `exc`
    itself, re-raised (a bug or an unexpected failure: its traceback)."""
    from tasks.core.tracking import artifact_store_down

    problem = artifact_store_down(exc)
    if problem is None:
        raise exc
    return StepError(problem)
