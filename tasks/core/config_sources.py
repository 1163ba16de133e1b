"""The typed shape of params.yaml's `collect` section: the sources, each a SQL table or
query, a folder of files or an HTTP API (tasks/core/config.py types the rest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.core.errors import ConfigError


def _known_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {tz!r}") from exc
    return tz


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SourceBase(_Strict):
    enabled: bool = True
    key: list[str] = Field(min_length=1, description="Columns that identify a row (natural key).")
    watermark: str | None = Field(
        default=None, description="Column that grows as rows are added or updated at the source."
    )
    partition_by: str | None = Field(
        default=None, description="Timestamp column whose local day names the partition."
    )
    schema_name: str = Field(
        alias="schema", description="The pandera schema in tasks/data/schemas.py."
    )

    @model_validator(mode="after")
    def _partitioned_needs_watermark(self) -> _SourceBase:
        if self.partition_by and not self.watermark:
            raise ValueError("a source with partition_by needs a watermark column")
        return self


class SqlSource(_SourceBase):
    kind: Literal["sql"]
    url_env: str = Field(description="Environment variable holding the SQLAlchemy URL.")
    default_url: str | None = Field(
        default=None, description="URL used when url_env is unset; must hold no password."
    )
    table: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if not self.watermark:
            raise ValueError("a sql source needs a watermark column")
        return self

    @field_validator("default_url")
    @classmethod
    def _no_password_in_params(cls, url: str | None) -> str | None:
        if url is not None:
            from urllib.parse import urlsplit  # what SQLAlchemy URLs are made of, lighter

            if urlsplit(url).password:
                raise ValueError(
                    "holds a password: put the URL in the environment variable url_env"
                )
        return url

    def resolve_url(self, root: Path | None = None) -> str:
        """The URL from url_env, else default_url; a relative SQLite path is taken
        relative to ``root`` (the project root), wherever the command runs from."""
        url = os.environ.get(self.url_env) or self.default_url
        if not url:
            raise ConfigError(
                f"environment variable {self.url_env} is not set (and no default_url)"
            )
        sqlite_file = url.removeprefix("sqlite:///")
        if root is not None and url.startswith("sqlite:///") and not sqlite_file.startswith("/"):
            return f"sqlite:///{root / sqlite_file}"
        return url


class FilesSource(_SourceBase):
    kind: Literal["files"]
    path: Path
    path_env: str | None = Field(
        default=None,
        description="Environment variable that, when set, names the folder instead of path "
        "(a folder every worker reaches, when runs execute on other machines).",
    )
    glob: str
    on_bad_file: Literal["fail", "skip"] = Field(
        default="fail",
        description="An unreadable file stops collection ('fail') or is left for the next run "
        "and listed in the manifest ('skip').",
    )

    def folder(self) -> Path:
        """The folder from path_env when set, else path (relative: to the project root)."""
        value = os.environ.get(self.path_env) if self.path_env else None
        return Path(value) if value else self.path


class HttpSource(_SourceBase):
    kind: Literal["http"]
    url: str
    token_env: str | None = Field(default=None, description="Variable with a bearer token.")
    since_param: str = "since"
    limit_param: str = "limit"
    items_field: str = "items"
    next_field: str = "next"
    timeout_seconds: float = Field(default=10, gt=0)
    max_retries: int = Field(default=5, ge=0)
    backoff_seconds: float = Field(default=0.5, ge=0)
    max_backoff_seconds: float = Field(default=30, gt=0)


Source = Annotated[SqlSource | FilesSource | HttpSource, Field(discriminator="kind")]


class CollectParams(_Strict):
    timezone: str = Field(description="The local time zone that names a partition's day.")
    chunk_rows: int = Field(gt=0)
    sources: dict[str, Source]

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        return _known_timezone(tz)

    @field_validator("sources")
    @classmethod
    def _safe_names(cls, sources: dict[str, Source]) -> dict[str, Source]:
        for name in sources:
            if not name.replace("_", "").isalnum():
                raise ValueError(f"source name {name!r}: use letters, digits and '_' only")
        return sources

    def enabled_sources(self) -> dict[str, Source]:
        return {name: src for name, src in self.sources.items() if src.enabled}
