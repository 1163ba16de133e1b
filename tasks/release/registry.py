"""The MLflow Model Registry as the release's record: versions, the champion alias, and an
append-only release history.

The history is kept by the tracking server beside the registry, as artifacts of one MLflow
run per registered model in the experiment `<tracking.experiment>-releases` (the model's
tag `release_history.experiment_id` says which): one JSON file per entry
(`history/000001.<writer id>.json`), never rewritten, and `history.txt`, the table
`plumber releases` prints, rewritten after each entry for people reading the MLflow UI.
Releases and rollbacks on one machine hold a lock (tasks/release/run.py); writers on two
machines sharing a server may pick the same number, and the writer id keeps both entries
(`record`). Registries written before kept one model tag per entry (`history.000001...`):
`ensure_model` moves them into the files.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from tasks.core import clock, tracking
from tasks.core.config import load_params
from tasks.core.errors import StepError
from tasks.core.paths import Paths

CHAMPION = "champion"
# On the registered model: the experiment holding its history run.
HISTORY_EXPERIMENT_TAG = "release_history.experiment_id"
# On the history run: the registered model whose history it holds.
HISTORY_RUN_TAG = "plumber.release_history"
ENTRIES, TABLE = "history", "history.txt"  # the history run's artifacts
LEGACY_PREFIX = "history."  # a model tag per entry, as registries before kept it
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


def ensure_model(client: MlflowClient, name: str, paths: Paths) -> None:
    """The registered model, created if needed, with the place of its release history."""
    model = tracking.find(f"registered model {name}", lambda: client.get_registered_model(name))
    if model is None:
        model = client.create_registered_model(
            name, description="Flight departure delay (>= 15 min or cancelled), NYC 2013."
        )
    if HISTORY_EXPERIMENT_TAG not in model.tags:
        experiment = tracking.start(paths, f"{load_params(paths.params).tracking.experiment}"
                                           "-releases")  # fmt: skip
        client.set_registered_model_tag(name, HISTORY_EXPERIMENT_TAG, experiment)
    _move_legacy_history(client, name, model.tags)


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version the champion alias points to; None when no version has it."""
    return tracking.find(
        f"the {CHAMPION} of {name}", lambda: client.get_model_version_by_alias(name, CHAMPION)
    )


def version(client: MlflowClient, name: str, number: str) -> ModelVersion | None:
    return tracking.find(f"{name} version {number}", lambda: client.get_model_version(name, number))


def history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """The release history, oldest first (by its keys: sequence number, then writer)."""
    return [entry for _, entry in sorted(_entries(client, name).items())]


def record(client: MlflowClient, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Append one entry to the release history.

    The registry has no compare-and-swap, so two writers (two machines sharing a tracking
    server) may read the same length at once: each entry's key also carries a writer id
    of its own (`000007.3f9c2a1b`), so neither overwrites the other; both are kept, in the
    order of their keys."""
    entries = history(client, name)
    entry = {"seq": len(entries) + 1, "at": clock.stamp(), **entry}
    run_id = _history_run(client, name)
    key = f"{entry['seq']:06d}.{uuid.uuid4().hex[:8]}"
    client.log_dict(run_id, entry, f"{ENTRIES}/{key}.json")
    # The table for people; a second writer's entry at the same instant is in the next one.
    client.log_text(run_id, format_history(name, history(client, name)), TABLE)
    return entry


def _entries(client: MlflowClient, name: str) -> dict[str, dict[str, Any]]:
    """Every entry by its key: the history runs' files, and any legacy model tags."""
    model = client.get_registered_model(name)
    found = {k.removeprefix(LEGACY_PREFIX): json.loads(v) for k, v in model.tags.items()
             if k.startswith(LEGACY_PREFIX)}  # fmt: skip
    experiment = model.tags.get(HISTORY_EXPERIMENT_TAG)
    for run in _history_runs(client, experiment, name) if experiment else []:
        with tempfile.TemporaryDirectory() as tmp:
            if not client.list_artifacts(run.info.run_id, ENTRIES):
                continue
            folder = Path(client.download_artifacts(run.info.run_id, ENTRIES, tmp))
            found.update({f.stem: json.loads(f.read_text()) for f in folder.glob("*.json")})
    return found


def _history_runs(client: MlflowClient, experiment: str, name: str) -> list[Any]:
    """The model's history runs, oldest first: one, unless two writers made the first at
    once (then both are read, and the oldest written to)."""
    return list(client.search_runs(
        [experiment], filter_string=f"tags.`{HISTORY_RUN_TAG}` = '{name}'",
        order_by=["attributes.start_time ASC"],
    ))  # fmt: skip


def _history_run(client: MlflowClient, name: str) -> str:
    """The id of the run the history is written to, created with the first entry."""
    experiment = client.get_registered_model(name).tags.get(HISTORY_EXPERIMENT_TAG)
    if experiment is None:
        raise StepError(f"registered model {name} names no experiment for its release "
                        f"history (tag {HISTORY_EXPERIMENT_TAG})")  # fmt: skip
    runs = _history_runs(client, experiment, name)
    if runs:
        return str(runs[0].info.run_id)
    run = client.create_run(
        experiment, run_name=f"{name} release history",
        tags={HISTORY_RUN_TAG: name, "mlflow.note.content":
              f"Every release and rollback of {name}: {TABLE}, and one JSON file per entry "
              f"under {ENTRIES}/ (`plumber releases`)."},
    )  # fmt: skip
    client.set_terminated(run.info.run_id)  # a record, not a job: nothing left RUNNING
    return str(run.info.run_id)


def _move_legacy_history(client: MlflowClient, name: str, tags: dict[str, str]) -> None:
    """Entries kept as model tags (before the history run) become files, then the tags go;
    a move cut short is finished next time (the same key is written again, not twice)."""
    legacy = sorted(k for k in tags if k.startswith(LEGACY_PREFIX))
    if not legacy:
        return
    run_id = _history_run(client, name)
    for key in legacy:
        client.log_dict(run_id, json.loads(tags[key]),
                        f"{ENTRIES}/{key.removeprefix(LEGACY_PREFIX)}.json")  # fmt: skip
    client.log_text(run_id, format_history(name, history(client, name)), TABLE)
    for key in legacy:
        client.delete_registered_model_tag(name, key)


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
