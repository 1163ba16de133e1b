"""The `plumber` command line (typer: each command's help is its docstring).

Each command imports only what it needs (Prefect, DVC and pandas are slow to import),
and expected failures end in one line naming the problem:
exit 0 success, 1 failure, 2 bad usage or configuration, 75 busy.
"""

from __future__ import annotations

import importlib
import sys

import typer

from flows.cli.app import app
from tasks.core.errors import PlumberError, report

# The commands register themselves when imported, in the order `plumber --help` lists them.
for _commands in ("pipeline_commands", "model_commands", "demo_commands"):
    importlib.import_module(f"flows.cli.{_commands}")

__all__ = ["app", "main"]


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
