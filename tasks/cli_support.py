"""What every ``python -m tasks.<step>`` shares: logging set-up and error exits.

Expected failures (bad params, an unreachable source, data that fails its checks) end
with one line naming the problem and a non-zero exit, not a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from tasks.config import ConfigError
from tasks.sources import SourceError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BUSY = 75  # EX_TEMPFAIL: try again later

# The flow runs each stage with this set to a format without a timestamp: it re-logs the
# stage's lines through Prefect, which stamps them itself.
LOG_FORMAT_ENV = "PLUMBER_LOG_FORMAT"


class StepError(Exception):
    """A step found a problem in the data it must not pass on."""


class Busy(StepError):
    """Another process holds what this one needs; the message names it."""


def configure_logging(level: int = logging.INFO) -> None:
    default = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        level=level, format=os.environ.get(LOG_FORMAT_ENV, default), stream=sys.stderr
    )


def stage_main(name: str, doc: str, work: Callable[[], object], argv: list[str] | None) -> int:
    """`python -m tasks.<name>`: --help from the module's docstring, then the work."""
    import argparse

    argparse.ArgumentParser(
        prog=f"python -m tasks.{name}", description=doc.split("\n")[0]
    ).parse_args(argv)
    return run_step(work)


def run_step(step: Callable[[], object]) -> int:
    configure_logging()
    try:
        step()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Busy as exc:
        print(f"busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except (SourceError, StepError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0
