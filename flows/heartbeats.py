"""Zombie flow runs, found by Prefect itself: every flow run sends a heartbeat event every
30 s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set by flows/environment.py and prefect.yaml), and an
automation on the server sets a run Crashed once its heartbeats stop for
`flow.heartbeat_grace_seconds` without a final state (Prefect's recipe, "How to detect
and respond to zombie flows"). A run killed with its machine, or whose end never reached a
server that was down, is then Crashed in the Prefect UI without waiting for the next run
(which still writes down what it finds: flows/run_hooks.py).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

NAME = "plumber: crash flow runs whose heartbeats stopped"
FLOWS = ["plumber", "plumber-reproduce"]  # ours only: a shared server's other flows are not
# A heartbeat, or any final state, keeps a run from being taken for a zombie.
ALIVE = (
    "prefect.flow-run.heartbeat",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
)


def automation(grace_seconds: float) -> Any:  # prefect's AutomationCore
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=NAME,
        description="Plumber's zombie detection (flows/heartbeats.py): a flow run with no "
        f"heartbeat for {grace_seconds:g} s (flow.heartbeat_grace_seconds) is Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect=set(ALIVE),
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": FLOWS}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=grace_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                name="Crashed",
                state=StateType.CRASHED,
                force=False,  # a run that ended meanwhile keeps its end
                message=f"no heartbeat for {grace_seconds:g} s: its process or machine died "
                "(flow.heartbeat_grace_seconds)",
            )
        ],
    )


def ensure_zombie_detection(grace_seconds: float) -> None:
    """Create (or bring up to date) the automation on the run's server. A failure is a
    warning: the run goes on, and the next run still writes down a dead one."""
    from prefect.client.orchestration import get_client

    wanted = automation(grace_seconds)
    try:
        with get_client(sync_client=True) as client:
            found = client.read_automations_by_name(NAME)
            if not found:
                client.create_automation(wanted)
            elif found[0].description != wanted.description or not found[0].enabled:
                client.update_automation(found[0].id, wanted)
    except Exception as exc:  # an older server, no permission: say so, never fail the run
        log.warning("could not set up zombie detection on the Prefect server (%s: %s)",
                    type(exc).__name__, exc)  # fmt: skip
