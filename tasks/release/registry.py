"""The MLflow Model Registry as the release's record: versions, the champion alias, and an
append-only release history.

The history lives in the registry itself, one registered-model tag per entry
(`history.000001.<writer id>`, ...): it travels with the registry wherever the tracking
server is, and an entry is never rewritten. Releases and rollbacks on one machine hold a
lock (tasks/release/run.py); writers on two machines sharing a server may pick the same
number, and the writer id keeps both entries (`record`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from tasks.core import clock, tracking
from tasks.core.errors import StepError
from tasks.core.paths import Paths

CHAMPION = "champion"
HISTORY_PREFIX = "history."
# A version's `decision` tag. PENDING: registered, not yet decided; ABANDONED: a release
# that was killed before the champion alias moved (set by the next release).
PENDING, ABANDONED = "pending", "abandoned"
# MLflow caps tag values (5000 characters on its SQL stores).
TAG_LIMIT = 5000


def connect(paths: Paths) -> MlflowClient:
    """A client for the tracking store's registry; one clear line when it is unreachable
    or unreadable (a corrupt local store included), naming it and what to do."""
    uri = tracking.prepare(paths)
    try:
        client = MlflowClient()
        client.search_registered_models(max_results=1)
    except Exception as exc:  # any transport or store error: say where, not how
        raise StepError(tracking.store_problem(paths, uri, exc)) from None
    return client


def ensure_model(client: MlflowClient, name: str) -> None:
    if tracking.find(f"registered model {name}", lambda: client.get_registered_model(name)):
        return
    client.create_registered_model(
        name, description="Flight departure delay (>= 15 min or cancelled), NYC 2013."
    )


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version the champion alias points to; None when no version has it."""
    return tracking.find(
        f"the {CHAMPION} of {name}", lambda: client.get_model_version_by_alias(name, CHAMPION)
    )


def version(client: MlflowClient, name: str, number: str) -> ModelVersion | None:
    return tracking.find(f"{name} version {number}", lambda: client.get_model_version(name, number))


def history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """The release history, oldest first (by its keys: sequence number, then writer)."""
    tags = client.get_registered_model(name).tags
    keys = sorted(k for k in tags if k.startswith(HISTORY_PREFIX))
    return [json.loads(tags[k]) for k in keys]


def record(client: MlflowClient, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Append one entry to the release history.

    The registry has no compare-and-swap, so two writers (two machines sharing a tracking
    server) may read the same length at once: each entry's key also carries a writer id
    of its own (`history.000007.3f9c2a1b`), so neither overwrites the other; both are
    kept, in the order of their keys. Keys without the id (`history.000001`, written
    before) sort the same way."""
    import uuid

    entries = history(client, name)
    entry = {"seq": len(entries) + 1, "at": clock.stamp(), **entry}
    key = f"{HISTORY_PREFIX}{entry['seq']:06d}.{uuid.uuid4().hex[:8]}"
    client.set_registered_model_tag(name, key, clip(entry))
    return entry


def move_champion(
    client: MlflowClient,
    name: str,
    version: str,
    entry: dict[str, Any],
    after_move: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Point `champion` at `version`, then record why: the alias move is the commit point;
    `reconcile` records a move whose entry a kill prevented."""
    before = champion(client, name)
    client.set_registered_model_alias(name, CHAMPION, version)
    after_move()
    return record(client, name, {**entry, "from": number(before), "to": str(version)})


def reconcile(client: MlflowClient, name: str) -> list[str]:
    """Repair what a killed release or rollback left; returns what it did.

    - the champion alias moved but its history entry was never written: record it;
    - versions still `pending`, or decided `released` but never made champion: abandoned.
    """
    done = []
    current = champion(client, name)
    entries = history(client, name)
    if current is not None and (not entries or entries[-1].get("to") != number(current)):
        record(client, name, {"action": "repair", "from": entries[-1]["to"] if entries else None,
                              "to": number(current), "forced": False,
                              "reason": "the alias moved in a release that was stopped before "
                                        "recording it"})  # fmt: skip
        done.append(f"recorded the move of {CHAMPION} to version {number(current)}")
        entries = history(client, name)
    promoted = {e.get("to") for e in entries}
    for version in client.search_model_versions(f"name='{name}'"):
        decision = version.tags.get("decision")
        stranded = decision == "released" and number(version) not in promoted
        if decision == PENDING or stranded:
            client.set_model_version_tag(name, number(version), "decision", ABANDONED)
            done.append(f"version {number(version)} ({decision}) marked {ABANDONED}")
    return done


def number(version: ModelVersion | None) -> str | None:
    """A version's number as a string (stores differ: some return ints)."""
    return None if version is None else str(version.version)


def versions_of_run(client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    return list(client.search_model_versions(f"name='{name}' and run_id='{run_id}'"))


def clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= TAG_LIMIT else text[: TAG_LIMIT - 3] + "..."


def champion_summary(paths: Paths, name: str) -> dict[str, Any] | None:
    """{"version", "metrics"} of the champion, or None before the first release."""
    local_store = paths.mlflow_db
    if not tracking.uses_server(paths) and not local_store.exists():
        return None  # no store yet: nothing was ever released, and nothing to create
    client = connect(paths)
    current = champion(client, name)
    if current is None:
        return None
    # Its scores on its own test window, from the short tags ("test.pr_auc": "0.4123").
    metrics = {k.removeprefix("test."): float(v) for k, v in current.tags.items()
               if k.startswith("test.")}  # fmt: skip
    if not metrics and "metrics.candidate" in current.tags:  # registered before the short tags
        metrics = json.loads(current.tags["metrics.candidate"])
    return {"version": number(current), "metrics": metrics, "run_id": current.run_id}


def format_history(name: str, entries: list[dict[str, Any]]) -> str:
    if not entries:
        return f"{name}: no releases yet"
    lines = [
        f"{'#':>3}  {'when (UTC)':<27}{'action':<10}{'from':>5} -> {'to':<5}{'forced':<8}reason"
    ]
    for e in entries:
        lines.append(
            f"{e['seq']:>3}  {e['at']:<27}{e['action']:<10}{e.get('from') or '-':>5} -> "
            f"{e.get('to') or '-':<5}{'yes' if e.get('forced') else 'no':<8}{e.get('reason', '')}"
        )
    return "\n".join(lines)
