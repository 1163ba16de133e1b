"""What the pipeline holds now, read from the manifest and the validation report."""

from __future__ import annotations

from typing import Any

from tasks.core.errors import StepError
from tasks.core.io import read_json
from tasks.core.paths import Paths
from tasks.ops import last_run
from tasks.ops.last_run import RUNNING


def status(paths: Paths, model_name: str | None = None) -> dict[str, Any]:
    """The data's state; with `model_name`, also the registry's champion (or None)."""
    from tasks.data.partitions import SNAPSHOT, UNKNOWN_DAY  # pandas: only when status is asked

    manifest = read_json(paths.manifest, default={"sources": {}})
    report = read_json(paths.validation_report, default={"sources": {}, "total": {}})
    sources = manifest.get("sources", {})
    present = {name: _present(paths, name, entry) for name, entry in sources.items()}
    days = {part.removesuffix(".parquet") for parts in present.values() for part in parts} - {
        SNAPSHOT,
        UNKNOWN_DAY,
    }
    data: dict[str, Any] = {
        "watermarks": {name: entry.get("watermark") for name, entry in sources.items()},
        # Rows of the partitions that are there as collect wrote them: never rows that
        # are not (a partition deleted or altered since is listed under `damaged`).
        "raw_rows": sum(p["rows"] for parts in present.values() for p in parts.values()),
        "raw_days": len(days),
        "quarantined_rows": report.get("total", {}).get("quarantined", 0),
        "sources": {
            name: {
                "kind": entry.get("kind"),
                "rows": sum(p["rows"] for p in present[name].values()),
                "partitions": len(present[name]),
                "damaged": sorted(set(entry.get("partitions", {})) - set(present[name])),
                "quarantined": report["sources"].get(name, {}).get("quarantined"),
                "skipped_files": sorted(entry.get("skipped_files", {})),
            }
            for name, entry in sources.items()
        },
    }
    try:
        data["last_run"] = last_run.current(paths)
    except StepError as exc:  # a stack's lock server down: the rest is still worth showing
        data["last_run"], data["last_run_error"] = None, str(exc)
    data["stack"] = stack_in_use(paths)
    if model_name is not None:
        from tasks.release.registry import champion_summary

        try:
            data["champion"] = champion_summary(paths, model_name)
        except StepError as exc:  # everything above is still worth showing
            data["champion"], data["store_error"] = None, str(exc)
    return data


def stack_in_use(paths: Paths) -> dict[str, str]:
    """Which servers this command talks to (tasks/core/profile.py), passwords masked."""
    from dataclasses import asdict

    from dvc.exceptions import DvcException

    from tasks.core.errors import StepError
    from tasks.core.profile import current
    from tasks.core.tracking import tracking_uri
    from tasks.lineage.remote import configured

    try:
        local_remote = configured(paths.root).url
    except StepError:
        local_remote = "none configured (dvc remote add -d NAME URL)"
    except DvcException as exc:  # not a DVC project (yet): status still shows the rest
        local_remote = f"none ({exc})"
    return asdict(current(tracking_uri(paths), local_remote))


def _present(paths: Paths, source: str, entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's partitions of a source that exist with the size collect recorded
    (a cheap check: collect and validate compare SHA-256)."""
    folder = paths.raw / source
    found = {}
    for name, part in entry.get("partitions", {}).items():
        try:
            size = (folder / name).stat().st_size
        except OSError:
            continue
        if part.get("bytes", size) == size:
            found[name] = part
    return found


def format_stack(stack: dict[str, str]) -> list[str]:
    where = f"profile {stack['profile']}" if stack["profile"] else "embedded (this checkout's var/)"
    return [
        f"stack: {where}",
        f"  tracking and registry: {stack['tracking']}",
        f"  orchestration: {stack['orchestration']}",
        f"  data remote: {stack['data_remote']}",
        f"  locks: {stack['locks']}",
    ]


def format_status(data: dict[str, Any]) -> str:
    lines = [
        *format_stack(data["stack"]),
        f"raw rows: {data['raw_rows']:,} over {data['raw_days']} days; "
        f"quarantined rows: {data['quarantined_rows']:,}",
        f"{'source':<14}{'kind':<7}{'rows':>10}{'parts':>7}{'quarant.':>10}  watermark",
    ]
    for name, src in data["sources"].items():
        quarantined = "-" if src["quarantined"] is None else f"{src['quarantined']:,}"
        lines.append(
            f"{name:<14}{src['kind'] or '?':<7}{src['rows']:>10,}{src['partitions']:>7}"
            f"{quarantined:>10}  {data['watermarks'].get(name) or '-'}"
        )
        if src["skipped_files"]:
            lines.append(f"{'':<14}skipped files: {', '.join(src['skipped_files'])}")
        if src["damaged"]:
            lines.append(f"{'':<14}missing or altered since collected (the next run restores "
                         f"them): {', '.join(src['damaged'])}")  # fmt: skip
    run = data.get("last_run")
    if run:
        release = f", release {run['decision']}" if run.get("decision") else ""
        when = f"at {run['finished']}" if run.get("finished") else f"since {run.get('started')}"
        # The state as Prefect shows it: the decision (Released, No retrain), not COMPLETED.
        lines.append(f"last run: {run['name']} {run.get('shown_as') or run['state']} {when}"
                     f"{release}")  # fmt: skip
        if run.get("reason") or (run["state"] not in ("COMPLETED", RUNNING) and run.get("message")):
            lines.append(f"  {run.get('reason') or run.get('message')}")
        previous = run.get("previous")
        if previous:
            lines.append(f"  the run before it, {previous['name']}, crashed: {previous['reason']}")
    if data.get("last_run_error"):
        lines.append(f"last run: unknown: {data['last_run_error']}")
    if data.get("store_error"):
        lines.append(f"champion: unknown: {data['store_error']}")
    elif "champion" in data:
        champ = data["champion"]
        lines.append(
            "champion: none yet" if champ is None else
            f"champion: version {champ['version']}, recall at precision "
            f"{champ['metrics'].get('recall_at_precision', float('nan')):.3f}"
        )  # fmt: skip
    return "\n".join(lines)
