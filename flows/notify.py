"""Failure notifications: a failed flow run posts one JSON message to a webhook.

The webhook URL is read from the environment variable that `flow.notify_url_env` names
(default PLUMBER_NOTIFY_URL), never from params: it often carries a token. Slack- and
Teams-style receivers show the `text` field; the others carry the details. A notification
that cannot be delivered is logged (without the URL) and never hides the run's own failure.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

log = logging.getLogger(__name__)


def failure_message(
    flow_run_name: str, flow_run_id: str, stage: str | None, error: str
) -> dict[str, Any]:
    where = f"in stage {stage}" if stage else "before any stage"
    return {
        "text": f"plumber flow run {flow_run_name} ({flow_run_id}) failed {where}: {error}",
        "flow_run": {"name": flow_run_name, "id": flow_run_id},
        "stage": stage,
        "error": error,
    }


def post_json(url: str, payload: dict[str, Any], timeout: float) -> bool:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return 200 <= answer.status < 300
    except Exception as exc:  # any delivery problem: say so, keep the run's own error
        log.warning("failure notification not delivered (%s)", type(exc).__name__)
        return False


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect on_failure hook of the pipeline flow."""
    from flows.stages import StageFailed
    from tasks.core.config import load_params
    from tasks.core.paths import Paths

    try:
        params = load_params(Paths.at(flow_run.parameters.get("root", ".")).params)
    except Exception:  # a broken params.yaml is the failure itself: nobody to notify
        return
    url = os.environ.get(params.flow.notify_url_env or "")
    if not url:
        return
    try:
        error = state.result(raise_on_failure=False)
    except Exception as exc:  # the result may not be retrievable; the message still is
        error = exc
    stage = error.stage if isinstance(error, StageFailed) else None
    detail = error.error if isinstance(error, StageFailed) else (state.message or str(error))
    message = failure_message(flow_run.name, str(flow_run.id), stage, detail)
    if post_json(url, message, params.flow.notify_timeout_seconds):
        log.info("failure notification sent to $%s", params.flow.notify_url_env)
