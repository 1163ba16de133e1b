"""Progress bars for the long steps (collection, training) when someone is watching.

Three modes, chosen by where the step's output goes:

- a terminal (`python -m tasks.train`, `dvc repro` from a shell): a tqdm bar on stderr;
- a `plumber run` on a terminal: the flow sets PLUMBER_PROGRESS=events for its stages, which
  then print one `PROGRESS {json}` line per update; the flow draws the bar itself, above
  which its log lines scroll (flows/stages.py);
- anything else (logs, CI, a scheduled run): nothing; the step's log lines say the same.
"""

from __future__ import annotations

import json
import os
import sys
from types import TracebackType
from typing import Any

MODE_ENV = "PLUMBER_PROGRESS"
EVENT_PREFIX = "PROGRESS "


def mode() -> str:
    chosen = os.environ.get(MODE_ENV)
    if chosen in ("events", "off", "tty"):
        return chosen
    return "tty" if sys.stderr.isatty() else "off"


class Progress:
    """`with Progress("train", total=30, unit="epoch") as bar: bar.update(1, pr_auc=0.61)`."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it") -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.mode = mode()
        self._bar: Any = None
        if self.mode == "tty":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True)
        self._emit({"event": "start", "total": total, "unit": unit})

    def update(self, n: int = 1, **postfix: float | str) -> None:
        if self._bar is not None:
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        self._emit({"event": "update", "n": n, "postfix": postfix})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._emit({"event": "close"})

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _emit(self, event: dict[str, Any]) -> None:
        if self.mode == "events":
            print(
                EVENT_PREFIX + json.dumps({"desc": self.desc, **event}), file=sys.stderr, flush=True
            )


class Bars:
    """The flow's side: draws the bars that a stage's PROGRESS lines describe."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}

    def handle(self, line: str) -> bool:
        """Draw the event in `line`; False if it is not a progress event."""
        if not line.startswith(EVENT_PREFIX):
            return False
        from tqdm import tqdm

        try:
            event = json.loads(line.removeprefix(EVENT_PREFIX))
        except ValueError:
            return False
        desc = event.get("desc", "")
        if event.get("event") == "start":
            self._bars[desc] = tqdm(
                total=event.get("total"), desc=desc, unit=event.get("unit", "it"),
                file=sys.stderr, leave=True,
            )  # fmt: skip
        elif desc in self._bars and event.get("event") == "update":
            self._bars[desc].set_postfix(event.get("postfix") or {}, refresh=False)
            self._bars[desc].update(event.get("n", 1))
        elif desc in self._bars and event.get("event") == "close":
            self._bars.pop(desc).close()
        return True

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
