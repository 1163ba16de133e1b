"""How Prefect's console shows a record (flows/logging.yml): its line, without the
traceback. The traceback goes to the log file and the run's log in the Prefect UI; on the
terminal a failed run ends in the one line that names the stage and its error."""

from __future__ import annotations

import logging

from prefect.logging.formatters import PrefectFormatter


class OneLineFormatter(PrefectFormatter):
    """Prefect's formatter, less tracebacks and stacks."""

    def format(self, record: logging.LogRecord) -> str:
        quiet = logging.makeLogRecord(record.__dict__)
        quiet.exc_info, quiet.exc_text, quiet.stack_info = None, None, None
        return super().format(quiet)
