"""The one exception hierarchy: every expected failure is a PlumberError, and its class
says how a command ends (`kind: message` on stderr, then its exit code).

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BUSY = 75  # EX_TEMPFAIL: try again later


class PlumberError(Exception):
    """An expected failure; the message names the problem."""

    kind = "error"
    exit_code = EXIT_FAILURE


class ConfigError(PlumberError):
    """params.yaml (or an environment variable it names) is missing or invalid."""

    exit_code = EXIT_USAGE


class NotFound(PlumberError):
    """What the command was asked about does not exist (a model version, an alias): the
    caller's mistake, so exit 2 like bad usage, never 1 (which `reproduce` keeps for
    "rebuilt and differs")."""

    exit_code = EXIT_USAGE


class SourceError(PlumberError):
    """An upstream system could not be read; the message names the source and the problem."""


class StepError(PlumberError):
    """A step found a problem in the data it must not pass on."""


class DiskFull(StepError):
    """A write found no space left: not transient, so never retried. Names the path and
    what is free there."""

    kind = "disk full"

    @classmethod
    def of(cls, exc: OSError, where: object = None) -> DiskFull:
        """`where`: the folder being written, for errors that name no file (pyarrow's)."""
        import os
        import shutil
        from pathlib import Path

        path = Path(str(exc.filename or where or os.getcwd())).absolute()
        where = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(where).free
        return cls(
            f"no space left on the device holding {path} ({free / 2**20:.1f} MiB free "
            "there): free some space, then run again; nothing half-written was kept"
        )


def is_disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk, however the library that met it reported it."""
    import errno

    return isinstance(exc, OSError) and (
        exc.errno == errno.ENOSPC or "No space left on device" in str(exc)
    )


class Busy(StepError):
    """Another process holds what this one needs; the message names it."""

    kind = "busy"
    exit_code = EXIT_BUSY


class DemoError(PlumberError):
    """The demo upstream cannot do what was asked."""


class Stopped(BaseException):
    """The process was asked to stop (SIGTERM): a time limit, a cancelled or killed run.

    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it; the
    steps' `finally` blocks and context managers still run (an MLflow run is ended)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received")


def report(exc: PlumberError | OSError) -> int:
    """The one place an expected failure becomes output and an exit code: one line,
    `kind: message` with secrets masked, on stderr."""
    import sys

    from tasks.core.secrets import mask

    kind = exc.kind if isinstance(exc, PlumberError) else "error"
    code = exc.exit_code if isinstance(exc, PlumberError) else EXIT_FAILURE
    print(f"{kind}: {mask(str(exc))}", file=sys.stderr)
    return code
