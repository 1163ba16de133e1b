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
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def manifest(self) -> Path:
        return self.raw / "manifest.json"

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
    def judged(self) -> Path:
        """The last candidate a release judged (a local shortcut; the registry decides)."""
        return self.var / "release" / "judged.json"

    @property
    def validation_report(self) -> Path:
        return self.reports / "validation.json"

    def resolve(self, path: Path | str) -> Path:
        """A path from params.yaml, taken relative to the project root."""
        path = Path(path)
        return path if path.is_absolute() else self.root / path
