"""The run summary: what a flow run did, returned by the flow and published as a Prefect
markdown artifact. Pure functions of what the run measured and the files it left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.core.io import read_json
from tasks.core.paths import Paths

ARTIFACT_KEY = "plumber-run-summary"


# Where `make ui` serves the MLflow UI of the default store (the Makefile's ui target).
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"


def rows_read(paths: Paths) -> dict[str, Any]:
    """Rows this run's collection read and added, per source (tasks/collect.py writes them;
    the flow removes the file first, so a collection that did not run counts nothing).
    Incremental reads overlap the last one, so rows read are often more than rows new."""
    counts = read_json(paths.collect_counts, default={})
    return {
        "read": {name: int(c["read"]) for name, c in counts.items()},
        "new": {name: int(c["new"]) for name, c in counts.items()},
        "read_total": sum(int(c["read"]) for c in counts.values()),
        "new_total": sum(int(c["new"]) for c in counts.values()),
    }


def mlflow_run(paths: Paths) -> dict[str, Any] | None:
    """The candidate's training run, with its link in the MLflow UI: the tracking server's,
    or on the default store the one `make ui` serves (a link that works while it runs)."""
    train = read_json(paths.train_record, default=None)
    if not train:
        return None
    from tasks.core.secrets import mask_urls
    from tasks.core.tracking import run_page, tracking_uri

    uri = tracking_uri(paths)
    server = uri.startswith(("http://", "https://"))
    base = mask_urls(uri).rstrip("/") if server else LOCAL_MLFLOW_UI
    experiment, run = train["experiment_id"], train["run_id"]
    return {"run_id": run, "experiment_id": experiment,
            "url": run_page(experiment, run, ui=f"{base}/"),
            "served_by": "the tracking server" if server else "`make ui`"}  # fmt: skip


def build(
    paths: Paths,
    flow_run: dict[str, str],
    stages: list[dict[str, Any]],
    retrain: dict[str, Any] | None,
    release: dict[str, Any] | None,
    overrides: list[str],
) -> dict[str, Any]:
    report = read_json(paths.validation_report, default={"total": {}})
    return {
        "flow_run": flow_run,
        "overrides": overrides,
        "stages": stages,
        "rows": {
            **rows_read(paths),
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
    lines += ["", f"- **Rows:** {describe_rows(rows)}; **quarantined** in this data version: "
                  f"{rows['quarantined']:,}"]  # fmt: skip
    if summary["retrain"]:
        from tasks.ops.retrain import describe

        lines.append(f"- **Retrain policy:** {describe(summary['retrain'])}")
    mlflow_run = summary["mlflow_run"]
    if mlflow_run:
        run_id = mlflow_run["run_id"]
        lines.append(f"- **MLflow run of the candidate:** [{run_id}]({mlflow_run['url']}) "
                     f"(served by {mlflow_run['served_by']})")  # fmt: skip
    lines += _release_lines(summary["release"])
    return "\n".join(lines) + "\n"


def describe_rows(rows: dict[str, Any]) -> str:
    """ "1,820 read, 918 new (flights 918 read, 918 new; weather ...)": the same counts as
    each source's `rows read` log line of collect."""
    active = [name for name in rows["read"] if rows["read"][name] or rows["new"][name]]
    if not active:
        return "nothing collected"
    # Sources that gave nothing are left out (a files source whose files did not change).
    per_source = "; ".join(f"{name} {rows['read'][name]:,} read, {rows['new'][name]:,} new"
                           for name in active)  # fmt: skip
    return f"{rows['read_total']:,} read, {rows['new_total']:,} new ({per_source})"


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


def shown_location(url: str, root: Path) -> str:
    """A remote's URL as the summary shows it: a folder inside the checkout relative to it
    (var/dvc-remote), so no path of this machine reaches the UI or a screenshot."""
    from urllib.parse import urlsplit

    path = Path(urlsplit(url).path if url.startswith("file:") else url)
    if path.is_absolute() and path.is_relative_to(root):
        return str(path.relative_to(root))
    return url
