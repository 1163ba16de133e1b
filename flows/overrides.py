"""Parameter overrides for one run, from the Prefect UI or `plumber run --set KEY=VALUE`.

Their types come from the models that validate params.yaml (tasks/core/config.py): every field
of an overridable section, optional. An override is written into params.yaml (comments and
quoting kept), as `dvc exp run --set-param` does, so dvc.lock records what the stages ran
with and `dvc repro` afterwards agrees; the merged file is validated before it is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from tasks.core.config import (
    EvaluateParams,
    FeaturizeParams,
    Params,
    ReleaseParams,
    TrainParams,
    ValidateParams,
    describe_errors,
)
from tasks.core.errors import ConfigError

SECTIONS: dict[str, type[BaseModel]] = {
    "validate": ValidateParams,
    "featurize": FeaturizeParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "release": ReleaseParams,
}


def _partial(model: type[BaseModel]) -> type[BaseModel]:
    """The same fields, each optional and unset by default."""
    fields: dict[str, Any] = {
        name: (Optional[info.annotation], Field(default=None, description=info.description))  # noqa: UP045
        for name, info in model.model_fields.items()
    }
    return create_model(
        f"{model.__name__}Override", __config__=ConfigDict(extra="forbid"), **fields
    )


# `validate` is a BaseModel method, so that section's field is `validate_` with an alias.
Overrides: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "Overrides",
    __config__=ConfigDict(extra="forbid", populate_by_name=True),
    **{
        f"{section}_" if section == "validate" else section: (
            _partial(model) | None,
            Field(default=None, alias=section, description=f"params.yaml `{section}` values"),
        )
        for section, model in SECTIONS.items()
    },
)


def changes_of(overrides: BaseModel | dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} of the values set; validated against the section types."""
    if overrides is None:
        return {}
    try:
        model = Overrides.model_validate(
            overrides.model_dump(by_alias=True) if isinstance(overrides, BaseModel) else overrides
        )
    except ValidationError as exc:
        raise ConfigError(f"overrides: {describe_errors(exc)}") from None
    dumped = model.model_dump(by_alias=True, exclude_none=True)
    return {section: values for section, values in dumped.items() if values}


def parse_assignments(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """`plumber run --set train.lr=0.002 --set train.hidden=[64]` -> {section: {key: value}};
    values are YAML, as in params.yaml."""
    changes: dict[str, dict[str, Any]] = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. train.lr=0.002")
        if section not in SECTIONS:
            raise ConfigError(f"--set {key}: only {', '.join(SECTIONS)} can be overridden")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"--set {key}: {value!r} is not a YAML value ({problem}); "
                              "e.g. train.hidden=[64,32]") from None  # fmt: skip
        changes.setdefault(section, {})[name] = parsed
    return changes


def check(params_file: Path, changes: dict[str, dict[str, Any]]) -> None:
    """Raise ConfigError naming the key if params.yaml with the changes would be invalid."""
    merged = yaml.safe_load(params_file.read_text()) or {}
    for section, values in changes.items():
        merged.setdefault(section, {}).update(values)
    try:
        Params.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"overrides: {describe_errors(exc)}") from None


def apply(params_file: Path, changes: dict[str, dict[str, Any]]) -> list[str]:
    """Write the changes into params.yaml if the result is valid; return "key=value" lines."""
    if not changes:
        return []
    check(params_file, changes)
    _update_in_place(params_file, changes)
    return [f"{s}.{k}={v!r}" for s, values in changes.items() for k, v in values.items()]


def _update_in_place(params_file: Path, changes: dict[str, dict[str, Any]]) -> None:
    """Round-trip params.yaml through ruamel (DVC's YAML library): comments, order, quotes
    and `null`s stay as they were; replaced atomically."""
    import io

    from ruamel.yaml import YAML

    from tasks.core.io import atomic_path

    rt = YAML()
    rt.preserve_quotes = True
    rt.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    data = rt.load(params_file.read_text())
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    out = io.StringIO()
    rt.dump(data, out)
    with atomic_path(params_file) as tmp:
        tmp.write_text(out.getvalue())
