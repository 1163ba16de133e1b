"""Where every step reads and writes, relative to one project root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def at(cls, root: Path | str = ".") -> Paths:
        return cls(Path(root).resolve())

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def var(self) -> Path:
        return self.root / "var"

    @property
    def upstream(self) -> Path:
        return self.var / "upstream"

    @property
    def collect_state(self) -> Path:
        """Local shortcuts of collect (file stat caches); never part of a data version."""
        return self.var / "collect"

    @property
    def collect_counts(self) -> Path:
        """Rows the latest collection read and added, per source: what the run summary
        shows (outside the data version: a re-read changes no data)."""
        return self.collect_state / "counts.json"

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def manifest(self) -> Path:
        return self.raw / "manifest.json"

    @property
    def rechecks(self) -> Path:
        """Partitions validate must check again although their bytes did not change (rows
        recorded in the future): written by collect, read by DVC as validate's input."""
        return self.root / "data" / "rechecks.json"

    @property
    def staging(self) -> Path:
        return self.raw / ".staging"

    @property
    def validated(self) -> Path:
        return self.root / "data" / "validated"

    @property
    def quarantine(self) -> Path:
        return self.root / "data" / "quarantine"

    @property
    def features(self) -> Path:
        return self.root / "data" / "features"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def encoders(self) -> Path:
        return self.features / "encoders.json"

    @property
    def checkpoint(self) -> Path:
        return self.models / "model.pt"

    @property
    def train_record(self) -> Path:
        """What training produced: the MLflow run, the data windows, the timings."""
        return self.models / "train.json"

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.json"

    @property
    def test_predictions(self) -> Path:
        return self.reports / "test_predictions.parquet"

    @property
    def plots(self) -> Path:
        return self.reports / "plots"

    @property
    def dvc_lock(self) -> Path:
        return self.root / "dvc.lock"

    @property
    def requirements_lock(self) -> Path:
        return self.root / "requirements.lock"

    @property
    def mlflow_store(self) -> Path:
        """The local MLflow store (SQLite and artifacts) when no tracking server is set."""
        return self.var / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_store / "mlflow.db"

    @property
    def journal(self) -> Path:
        return self.var / "journal"

    @property
    def release_work(self) -> Path:
        """The release's scratch space: the packaged model, the smoke test's files."""
        return self.var / "release"

    @property
    def prefect_home(self) -> Path:
        return self.var / "prefect"

    @property
    def prefect_server(self) -> Path:
        return self.var / "prefect-server"

    @property
    def last_summary(self) -> Path:
        """The latest run's summary, as JSON (and beside it as Markdown: .md)."""
        return self.var / "last_summary.json"

    def lock(self, name: str) -> Path:
        """var/<name>.lock: run (one flow run), stage (one stage), release (one release)."""
        return self.var / f"{name}.lock"

    @property
    def judged(self) -> Path:
        """The last candidate a release judged (a local shortcut; the registry decides)."""
        return self.release_work / "judged.json"

    @property
    def validation_report(self) -> Path:
        return self.reports / "validation.json"

    def resolve(self, path: Path | str) -> Path:
        """A path from params.yaml, taken relative to the project root."""
        path = Path(path)
        return path if path.is_absolute() else self.root / path
