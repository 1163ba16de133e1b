"""The run summary: what a flow run did, returned by the flow and published as a Prefect
markdown artifact. Pure functions of what the run measured and the files it left."""

from __future__ import annotations

from typing import Any

from tasks.core.io import read_json
from tasks.core.paths import Paths

ARTIFACT_KEY = "plumber-run-summary"


def rows_by_source(paths: Paths) -> dict[str, int]:
    manifest = read_json(paths.manifest, default={"sources": {}})
    return {name: int(entry.get("rows", 0)) for name, entry in manifest["sources"].items()}


def mlflow_run(paths: Paths) -> dict[str, Any] | None:
    """The candidate's training run; a link when a tracking server is configured."""
    train = read_json(paths.train_record, default=None)
    if not train:
        return None
    from tasks.core.tracking import safe_uri, tracking_uri

    uri = tracking_uri(paths)
    link = None
    if uri.startswith(("http://", "https://")):
        experiment, run = train["experiment_id"], train["run_id"]
        link = f"{safe_uri(uri).rstrip('/')}/#/experiments/{experiment}/runs/{run}"
    return {"run_id": train["run_id"], "experiment_id": train["experiment_id"], "url": link}


def build(
    paths: Paths,
    flow_run: dict[str, str],
    stages: list[dict[str, Any]],
    rows_before: dict[str, int],
    retrain: dict[str, Any] | None,
    release: dict[str, Any] | None,
    overrides: list[str],
) -> dict[str, Any]:
    after = rows_by_source(paths)
    collected = {name: rows - rows_before.get(name, 0) for name, rows in after.items()}
    report = read_json(paths.validation_report, default={"total": {}})
    return {
        "flow_run": flow_run,
        "overrides": overrides,
        "stages": stages,
        "rows": {
            "collected": collected,
            "collected_total": sum(collected.values()),
            "quarantined": report.get("total", {}).get("quarantined", 0),
        },
        "retrain": retrain,
        "release": release,
        "mlflow_run": mlflow_run(paths),
    }


def markdown(summary: dict[str, Any]) -> str:
    run = summary["flow_run"]
    lines = [f"# plumber run `{run['name']}`", ""]
    if summary["overrides"]:
        lines += [f"Parameters overridden: {', '.join(summary['overrides'])}", ""]
    lines += ["| stage | outcome | seconds |", "|---|---|---:|"]
    for stage in summary["stages"]:
        outcome = stage["outcome"] + (f" ({stage['note']})" if stage.get("note") else "")
        lines.append(f"| {stage['stage']} | {outcome} | {stage['seconds']:.1f} |")
    rows = summary["rows"]
    per_source = ", ".join(f"{name} {n:,}" for name, n in rows["collected"].items())
    lines += [
        "",
        f"- **Rows collected:** {rows['collected_total']:,} ({per_source or 'no sources'}); "
        f"**quarantined** in this data version: {rows['quarantined']:,}",
    ]
    if summary["retrain"]:
        from tasks.ops.retrain import describe

        lines.append(f"- **Retrain policy:** {describe(summary['retrain'])}")
    mlflow_run = summary["mlflow_run"]
    if mlflow_run:
        run_id = mlflow_run["run_id"]
        shown = f"[{run_id}]({mlflow_run['url']})" if mlflow_run["url"] else f"`{run_id}`"
        lines.append(f"- **MLflow run of the candidate:** {shown}")
    lines += _release_lines(summary["release"])
    return "\n".join(lines) + "\n"


def _release_lines(release: dict[str, Any] | None) -> list[str]:
    if not release:
        return ["- **Release:** not run"]
    before, after = release["champion_before"] or "none", release["champion_after"] or "none"
    move = f"{before} -> {after}" if before != after else f"{after} (unchanged)"
    lines = [
        f"- **Release:** {release['decision']}{' (forced)' if release['forced'] else ''}, "
        f"candidate version {release['version'] or '-'}; champion {move}",
        *[f"  - {reason}" for reason in release["reasons"]],
    ]
    compared = {k: v for k, v in (release.get("compared") or {}).items() if v}
    if compared:
        metrics = list(next(iter(compared.values())))
        lines += ["", "| metric | " + " | ".join(compared) + " |"]
        lines.append("|---|" + "---:|" * len(compared))
        for metric in metrics:
            values = " | ".join(
                f"{block.get(metric, float('nan')):.4f}" for block in compared.values()
            )
            lines.append(f"| {metric} | {values} |")
    return lines


# The flow run's final state name for each release decision (tasks/release/gate.py), and
# for a run that found no retrain due: a rejected candidate must not read as plain success.
STATE_NAMES = {"released": "Released", "rejected": "Rejected", "no-change": "No change"}
NO_RETRAIN = "No retrain"


def outcome(summary: dict[str, Any]) -> tuple[str, str, list[str]]:
    """The run's decision as Prefect shows it: a state name, its message, and tags to
    filter runs by (`decision:rejected`, `candidate:3`)."""
    release = summary["release"]
    if not release:
        verdict = summary.get("retrain") or {}
        return (
            NO_RETRAIN,
            str(verdict.get("reason") or "no retrain needed"),
            ["decision:no-retrain"],
        )
    decision, version = release["decision"], release["version"] or "-"
    reasons = "; ".join(release["reasons"]) or "no reason recorded"
    before, after = release["champion_before"] or "none", release["champion_after"] or "none"
    champion = f"champion {before} -> {after}" if before != after else f"champion {after}"
    message = f"candidate version {version} {decision}: {reasons} ({champion})"
    return (
        STATE_NAMES.get(decision, decision),
        message,
        [f"decision:{decision}", f"candidate:{version}"],
    )


def publish(summary: dict[str, Any], paths: Paths) -> None:
    """The summary as the flow run's markdown artifact (the Prefect UI's Artifacts tab),
    and as var/last_summary.{json,md} for whoever has no Prefect UI at hand."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.core.io import atomic_path, write_json

    text = markdown(summary)
    write_json(paths.last_summary, summary)
    with atomic_path(paths.last_summary.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    create_markdown_artifact(
        markdown=text,
        key=ARTIFACT_KEY,
        description="stages, rows, retrain decision, release decision, MLflow run",
    )
