"""The latest flow run, kept for `plumber status`: var/last_run.json.

Written by the flow's own completion and failure hooks, so a run started by `plumber run`,
a schedule or the Prefect UI is recorded alike.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tasks.io import write_json
from tasks.paths import Paths

FILE = "last_run.json"


def record_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect on_completion / on_failure hook."""
    paths = Paths.at(flow_run.parameters.get("root", "."))
    decision = retrained = None
    if state.is_completed():
        result = state.result(raise_on_failure=False)
        if isinstance(result, dict):
            decision = (result.get("release") or {}).get("decision")
            retrained = (result.get("retrain") or {}).get("retrain")
    started = flow_run.start_time
    write_json(
        paths.var / FILE,
        {
            "id": str(flow_run.id),
            "name": flow_run.name,
            "state": state.type.value,
            "started": started.isoformat() if started else None,
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "decision": decision,  # None: the release did not run
            "retrain": retrained,  # False: the retrain policy found no retrain needed
        },
    )
