"""What the pipeline holds now, read from the manifest and the validation report."""

from __future__ import annotations

from typing import Any

from tasks.io import read_json
from tasks.partitions import SNAPSHOT, UNKNOWN_DAY
from tasks.paths import Paths


def status(paths: Paths, model_name: str | None = None) -> dict[str, Any]:
    """The data's state; with `model_name`, also the registry's champion (or None)."""
    manifest = read_json(paths.manifest, default={"sources": {}})
    report = read_json(paths.validation_report, default={"sources": {}, "total": {}})
    sources = manifest.get("sources", {})
    days = {
        name.removesuffix(".parquet")
        for entry in sources.values()
        for name in entry.get("partitions", {})
    } - {SNAPSHOT, UNKNOWN_DAY}
    data: dict[str, Any] = {
        "watermarks": {name: entry.get("watermark") for name, entry in sources.items()},
        "raw_rows": sum(entry.get("rows", 0) for entry in sources.values()),
        "raw_days": len(days),
        "quarantined_rows": report.get("total", {}).get("quarantined", 0),
        "sources": {
            name: {
                "kind": entry.get("kind"),
                "rows": entry.get("rows", 0),
                "partitions": len(entry.get("partitions", {})),
                "quarantined": report["sources"].get(name, {}).get("quarantined"),
                "skipped_files": sorted(entry.get("skipped_files", {})),
            }
            for name, entry in sources.items()
        },
    }
    data["last_run"] = read_json(paths.var / "last_run.json", default=None)  # flows/run_record.py
    if model_name is not None:
        from tasks.registry import champion_summary

        data["champion"] = champion_summary(paths, model_name)
    return data


def format_status(data: dict[str, Any]) -> str:
    lines = [
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
    run = data.get("last_run")
    if run:
        release = f", release {run['decision']}" if run.get("decision") else ""
        lines.append(f"last run: {run['name']} {run['state']} at {run['finished']}{release}")
    if "champion" in data:
        champ = data["champion"]
        lines.append(
            "champion: none yet" if champ is None else
            f"champion: version {champ['version']}, recall at precision "
            f"{champ['metrics'].get('recall_at_precision', float('nan')):.3f}"
        )  # fmt: skip
    return "\n".join(lines)
