"""params.yaml validation and the CLI's exits and messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from flows.cli import main
from tasks.core.config import load_params
from tasks.core.errors import ConfigError
from tests.factories import ROOT


def params_with(tmp_path: Path, change) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    change(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def defaults_in_code(model: BaseModel, written: dict, where: str = "") -> list[str]:
    """Every key params.yaml writes whose field in code has a default too (two places)."""
    wrong = []
    for name, field in type(model).model_fields.items():
        key, value = field.alias or name, getattr(model, name)
        if key not in written or key == "sources":  # each source's options are its own
            continue
        if not field.is_required():
            wrong.append(f"{where}{key}: a default in code as well as in params.yaml")
        if isinstance(value, BaseModel):
            wrong += defaults_in_code(value, written[key], f"{where}{key}.")
    return wrong


def test_params_yaml_is_the_one_place_of_every_default(tmp_path: Path) -> None:
    written = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert defaults_in_code(load_params(ROOT / "params.yaml"), written) == []
    del written["train"]["lr"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(written))
    with pytest.raises(ConfigError, match=r"train\.lr: Field required"):
        load_params(path)  # a missing key is named, never filled in from code


def test_params_are_validated_once_per_content_and_again_after_a_change(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    first = load_params(path)
    assert load_params(path) is first  # unchanged: the same validated object
    path.write_text(path.read_text().replace("  lr: 0.001", "  lr: 0.002"))
    assert load_params(path).train.lr == 0.002  # changed (same size, same second): read again
    path.write_text(path.read_text().replace("  lr: 0.002", "  lr: -1"))
    with pytest.raises(ConfigError, match=r"train\.lr: Input should be greater than 0"):
        load_params(path)  # a bad edit is never hidden by what was read before


def test_the_shipped_params_are_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert set(params.collect.enabled_sources()) == {
        "flights",
        "weather",
        "planes",
        "airports",
        "airlines",
    }
    assert params.collect.sources["weather_api"].kind == "http"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["collect"].update(chunk_row=5), "collect.chunk_row: Extra inputs are not permitted"),
        (lambda p: p["validate"].update(max_reject_rate=2), "validate.max_reject_rate: Input should be less"),
        (lambda p: p["collect"].update(timezone="Mars/Olympus"), "unknown timezone 'Mars/Olympus'"),
        (lambda p: p["collect"]["sources"]["flights"].update(kind="ftp"), "collect.sources.flights: Input tag 'ftp'"),
        (lambda p: p["collect"]["sources"]["flights"].update(default_url="postgresql://u:pw@h/db"),
         "holds a password: put the URL in the environment variable url_env"),
        (lambda p: p["collect"]["sources"]["flights"].update(query="SELECT 1"), "exactly one of 'table' or 'query'"),
        # A renamed source must not silently stop new-row retraining.
        (lambda p: p["schedule"]["retrain_when"].update(source="flightz"),
         "params.yaml: schedule.retrain_when.source: 'flightz' is not a source in collect.sources (airlines, airports, flights,"),
        (lambda p: p["schedule"]["retrain_when"].update(source="planes"),
         "schedule.retrain_when.source: 'planes' must be an enabled source partitioned by day"),
    ],
)  # fmt: skip
def test_bad_params_name_the_key(tmp_path: Path, change, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_params(params_with(tmp_path, change))


def test_cli_exit_codes_and_messages(tmp_path: Path, capsys) -> None:
    params_with(tmp_path, lambda p: p["collect"].update(chunk_row=5))  # writes tmp_path/params.yaml
    assert main(["--root", str(tmp_path), "run"]) == 2
    assert "collect.chunk_row: Extra inputs are not permitted" in capsys.readouterr().err

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert main(["--root", str(tmp_path), "demo", "advance"]) == 1
    assert "run `plumber demo init` first" in capsys.readouterr().err

    assert main(["--root", str(tmp_path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    stack = status.pop("stack")
    assert status == {
        "watermarks": {}, "raw_rows": 0, "raw_days": 0, "quarantined_rows": 0, "sources": {},
        "champion": None, "last_run": None,  # nothing run or released yet
    }  # fmt: skip
    # no PLUMBER_STACK: the embedded stack, under this root's var/
    assert stack["profile"] == "" and stack["tracking"].startswith(f"sqlite:///{tmp_path}/var/")
    assert stack["locks"] == "file locks under var/ (this machine only)"


@pytest.mark.slow  # starts processes (or trains): make test-fast leaves it out
def test_every_command_has_help_with_an_example() -> None:
    for command in (["run"], ["serve"], ["status"], ["release"], ["releases"], ["rollback"],
                    ["predict"], ["demo", "init"], ["demo", "advance"], ["demo", "api"],
                    ["server"], ["push"], ["lineage"], ["reproduce"]):  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-m", "flows.cli", *command, "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert out.returncode == 0, command
        example = out.stdout.lower().partition("example")[2]  # "example:" or "examples:"
        assert f"plumber {' '.join(command)}" in example, command
    assert main(["demo", "init", "--now", "July"]) == 2  # bad usage: click's message, exit 2
    assert main(["reproduce"]) == 2  # neither a version nor --all-released
    assert main(["reproduce", "3", "--all-released"]) == 2
    assert main(["bogus"]) == 2


@pytest.mark.slow  # a fresh process per help page
def test_help_lists_every_command_with_a_whole_sentence() -> None:
    """On an 80-column terminal, as in a pipe: no description cut with '...'."""
    for command in ([], ["server"], ["demo"]):
        out = subprocess.run([sys.executable, "-m", "flows.cli", *command, "--help"],
                             capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "COLUMNS": "80"})  # fmt: skip
        listed = out.stdout.partition("Commands:")[2].partition("Examples")[0]
        lines = [line for line in listed.splitlines() if line.strip()]
        assert lines and all(line.rstrip().endswith(".") for line in lines), lines
        assert "..." not in listed, listed


def test_status_survives_a_corrupt_mlflow_store(tmp_path: Path, capsys) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    manifest = {
        "version": 1,
        "sources": {
            "flights": {
                "kind": "sql",
                "watermark": "2013-07-01T04:00:00+00:00",
                "rows": 0,
                "partitions": {},
            }
        },
    }
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/manifest.json").write_text(json.dumps(manifest))
    store = tmp_path / "var/mlflow/mlflow.db"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"this is not a database" * 200)
    assert main(["--root", str(tmp_path), "status"]) == 0
    out = capsys.readouterr()
    assert "2013-07-01T04:00:00+00:00" in out.out  # what does not need the store is shown
    [line] = [line for line in out.out.splitlines() if line.startswith("champion:")]
    assert f"the local MLflow store {store} cannot be read" in line
    assert f"mv {store} {store}.bad" in line
    assert "Traceback" not in out.out + out.err
    assert main(["--root", str(tmp_path), "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["champion"] is None and "cannot be read" in data["store_error"]
