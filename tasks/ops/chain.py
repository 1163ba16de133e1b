"""`plumber lineage REF`: from a model version back to the rows that fed it.

model version (decision, aliases now and in the history)
  -> MLflow run -> Prefect flow run -> git commit (+ uncommitted changes)
  -> params -> each stage's inputs and outputs (the recorded dvc.lock)
  -> per source: days, rows and watermark of the raw data
  -> the DVC remote, and whether it holds every object
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import yaml

from tasks.core.errors import ConfigError, NotFound, StepError
from tasks.core.paths import Paths
from tasks.core.secrets import mask_urls
from tasks.lineage import record

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class Ref:
    """What REF resolved to: a training run, and the model version when REF named one."""

    run_id: str
    model: str | None = None
    version: str | None = None


def resolve(client: Any, model_name: str, ref: str) -> Ref:
    """REF: a version (`3`), an alias (`champion`), `models:/NAME/3`, `models:/NAME@ALIAS`
    or an MLflow run id (32 hex digits)."""
    from tasks.core import tracking

    ref = ref.strip()
    if RUN_ID.match(ref):
        return Ref(ref)
    found = MODEL_URI.match(ref)
    name, version, alias = model_name, None, None
    if found:
        name, version, alias = found["name"], found["version"], found["alias"]
    elif ref.isdigit():
        version = ref
    elif re.fullmatch(r"[\w-]+", ref):
        alias = ref
    else:
        raise ConfigError(
            f"{ref!r} is not a model version, alias, models:/ URI or MLflow run id "
            "(examples: 3, champion, models:/flight-delay@champion)"
        )
    if alias:
        what = f"alias {alias!r} of model {name}"
        got = tracking.find(what, lambda: client.get_model_version_by_alias(name, alias))
    else:
        what = f"version {version} of model {name}"
        got = tracking.find(what, lambda: client.get_model_version(name, version))
    if got is None:
        raise NotFound(f"there is no {what} in the registry: see `plumber releases`")
    if not got.run_id:
        raise StepError(f"{what} names no MLflow run: it was not registered by plumber")
    return Ref(got.run_id, name, str(got.version))


def model_block(client: Any, ref: Ref) -> dict[str, Any] | None:
    from tasks.release import card, registry

    if ref.model is None or ref.version is None:
        return None
    got = client.get_model_version(ref.model, ref.version)
    moves = [e for e in registry.history(client, ref.model)
             if ref.version in (str(e.get("to")), str(e.get("from")))]  # fmt: skip
    return {
        "name": ref.model,
        "version": ref.version,
        "decision": got.tags.get("decision"),
        "aliases": list(got.aliases),
        "history": [
            {k: e.get(k) for k in ("seq", "at", "action", "from", "to", "reason")} for e in moves
        ],
        "data_window": card.window(got.tags) or None,
    }


def stages_block(lock: dict[str, Any]) -> dict[str, Any]:
    """Each recorded stage's data inputs, params and outputs, by path and hash."""

    def files(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"path": e["path"], "md5": e.get("md5"), "files": e.get("nfiles"),
                 "bytes": e.get("size")} for e in entries]  # fmt: skip

    out = {}
    for name, stage in (lock.get("stages") or {}).items():
        deps = [d for d in stage.get("deps", []) if not str(d["path"]).startswith("tasks")]
        params = {
            k: v for values in (stage.get("params") or {}).values() for k, v in values.items()
        }
        out[name] = {
            "inputs": files(deps),
            "params": params,
            "outputs": files(stage.get("outs", [])),
        }
    return out


def sources_block(manifest: dict[str, Any]) -> dict[str, Any]:
    """Per source: the days of its partitions, rows and watermark: the upstream rows."""
    out = {}
    for name, entry in (manifest.get("sources") or {}).items():
        days = sorted(p.removesuffix(".parquet") for p in entry.get("partitions", {}))
        dated = [d for d in days if re.fullmatch(r"\d{4}-\d{2}-\d{2}", d)]
        out[name] = {
            "kind": entry.get("kind"),
            "rows": entry.get("rows"),
            "watermark": entry.get("watermark"),
            "days": [dated[0], dated[-1]] if dated else None,
            "partitions": len(days),
        }
    return out


def params_block(params: bytes) -> dict[str, Any]:
    """The recorded params.yaml's hash and the sections of the stages it rebuilds."""
    values = yaml.safe_load(params or b"{}") or {}
    rebuilt = {k: v for k, v in values.items() if k in ("featurize", "train", "evaluate")}
    return {"sha256": hashlib.sha256(params).hexdigest() if params else None, **rebuilt}


def lineage(paths: Paths, client: Any, ref: Ref, check_remote: bool = True) -> dict[str, Any]:
    """The chain of `ref`, as JSON-ready data."""
    from tasks.core import tracking

    found = record.load(client, ref.run_id)
    run = client.get_run(ref.run_id)
    info = found.info
    checked, gone = record.remote_check(paths, found) if check_remote and info else (0, [])
    return {
        "model": model_block(client, ref),
        "mlflow_run": {
            "id": ref.run_id,
            "experiment_id": run.info.experiment_id,
            "status": run.info.status,
            "tracking_uri": mask_urls(tracking.tracking_uri(paths)),
        },
        # Who trained it (the flow run whose training stage ran, none for a `dvc repro` by
        # hand) and who recorded it (the flow run that pushed its data and wrote its
        # record): not always one run.
        "prefect_flow_run": {
            "trained_by": run.data.tags.get(tracking.FLOW_RUN_TAG) or None,
            "recorded_by": info.get("prefect_flow_run_id"),
        },
        "git": {
            "commit": info.get("git_commit"),
            "dirty": info.get("git_dirty"),
            "diff_bytes": info.get("diff_bytes"),
            "data_version": info.get("data_version"),
        },
        "params": params_block(found.params),
        "stages": stages_block(found.lock),
        "sources": sources_block(found.manifest),
        "remote": {
            **info.get("remote", {}),
            "objects": checked,
            "missing": gone,
            "complete": bool(info) and not gone,
        },
        "requirements_lock_sha256": info.get("requirements_lock_sha256"),
        "python": info.get("python"),
        "record_missing": found.missing,
    }


def flow_run_lines(flow: dict[str, str | None]) -> list[str]:
    """Who trained the candidate and, when another, who recorded it."""
    trained = flow["trained_by"] or "none: trained outside the flow (`dvc repro` by hand)"
    lines = [f"  -> trained by Prefect flow run {trained}"]
    if flow["recorded_by"] != flow["trained_by"]:
        lines.append(f"     recorded by Prefect flow run {flow['recorded_by'] or '- (none)'}")
    return lines


def describe(chain: dict[str, Any]) -> str:
    """The chain for people, one link a line."""
    lines = []
    model = chain["model"]
    if model:
        moves = "; ".join(f"{e['action']} {e['at']} ({e['from'] or 'none'} -> {e['to']})"
                          for e in model["history"]) or "never champion"  # fmt: skip
        aliases = ", ".join(model["aliases"]) or "none"
        lines.append(f"model     {model['name']} version {model['version']}: "
                     f"{model['decision']}; aliases now: {aliases}")  # fmt: skip
        lines.append(f"          history: {moves}")
    run = chain["mlflow_run"]
    lines.append(f"  -> MLflow run {run['id']} ({run['status']}, experiment {run['experiment_id']}"
                 f" in {run['tracking_uri']})")  # fmt: skip
    if chain["record_missing"]:
        lines.append(f"  !! the record is incomplete: {', '.join(chain['record_missing'])}")
        return "\n".join(lines)
    lines += flow_run_lines(chain["prefect_flow_run"])
    git = chain["git"]
    dirty = f" + {git['diff_bytes']:,} bytes of uncommitted changes" if git["dirty"] else ""
    version = f"; data version {git['data_version'][:12]}" if git["data_version"] else ""
    lines.append(f"  -> git commit {git['commit']}{dirty}{version}")
    train = chain["params"].get("train", {})
    lines.append(f"  -> params.yaml sha256 {str(chain['params']['sha256'])[:16]}... (train: "
                 + ", ".join(f"{k} {train.get(k)}" for k in ("seed", "epochs", "lr", "members"))
                 + ")")  # fmt: skip
    lines.append("  -> stages (recorded dvc.lock):")
    for name, stage in chain["stages"].items():
        ins = ", ".join(f"{d['path']} {str(d['md5'])[:8]}" for d in stage["inputs"]) or "-"
        outs = ", ".join(f"{o['path']} {str(o['md5'])[:8]}" for o in stage["outputs"]) or "-"
        lines.append(f"       {name:<10} in: {ins}")
        lines.append(f"       {'':<10} out: {outs}")
    lines.append("  -> raw data, per source:")
    for name, src in chain["sources"].items():
        days = f"{src['days'][0]}..{src['days'][1]}" if src["days"] else "snapshot"
        lines.append(f"       {name:<12} {days}, {src['rows']:,} rows, "
                     f"watermark {src['watermark'] or '-'}")  # fmt: skip
    remote = chain["remote"]
    where = f"DVC remote {remote.get('name')} ({remote.get('url')})"
    if remote["complete"]:
        lines.append(f"  -> {where}: all {remote['objects']} objects present")
    else:
        lines.append(f"  -> {where}: {len(remote['missing'])} missing: "
                     + ", ".join(remote["missing"][:5]))  # fmt: skip
    return "\n".join(lines)
