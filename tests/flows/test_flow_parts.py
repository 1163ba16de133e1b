"""The flow's pure parts: parameter overrides, the run summary, stage time limits, the
deployment (against prefect.yaml), and running a stage's command with its output relayed."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows import deployment, summary
from flows.overrides import Overrides, apply, changes_of, parse_assignments
from flows.pipeline import check_timeouts
from flows.process import last_error, run_captured
from flows.stages import _relay
from tasks.core.config import load_params
from tasks.core.errors import ConfigError
from tasks.core.io import write_json
from tasks.core.paths import Paths
from tests.factories import ROOT, section, wait_until


def test_overrides_are_typed_by_the_params_models() -> None:
    schema = Overrides.model_json_schema()
    assert set(schema["properties"]) == {"validate", "featurize", "train", "evaluate", "release"}
    assert changes_of({"train": {"lr": 0.002}, "validate": {"max_reject_rate": 0.1}}) == {
        "train": {"lr": 0.002},
        "validate": {"max_reject_rate": 0.1},
    }
    assert changes_of(None) == {} and changes_of({"train": {}}) == {}
    with pytest.raises(ConfigError, match=r"overrides: train\.lrr: Extra inputs"):
        changes_of({"train": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"train\.epochs: Input should be a valid integer"):
        changes_of({"train": {"epochs": "many"}})


def test_set_assignments_parse_as_yaml_and_name_bad_keys() -> None:
    assert parse_assignments(["train.lr=0.002", "train.hidden=[64, 32]"]) == {
        "train": {"lr": 0.002, "hidden": [64, 32]}
    }
    with pytest.raises(ConfigError, match="expected SECTION.KEY=VALUE"):
        parse_assignments(["train.lr"])
    with pytest.raises(ConfigError, match="--set collect.chunk_rows: only validate, featurize"):
        parse_assignments(["collect.chunk_rows=5"])


def test_an_override_is_written_into_params_keeping_comments(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_text()
    with pytest.raises(ConfigError, match=r"train\.lr: Input should be greater than 0"):
        apply(params, {"train": {"lr": -1}})
    assert params.read_text() == before  # nothing written
    assert apply(params, {"train": {"lr": 0.002}}) == ["train.lr=0.002"]
    after = params.read_text()
    assert load_params(params).train.lr == 0.002
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert changed == [("  lr: 0.001", "  lr: 0.002")]  # comments, quotes and nulls kept


def test_stage_time_limits_name_only_real_stages() -> None:
    flow = section("flow", stage_timeout_seconds={"default": 60, "train": 600})
    assert (flow.timeout_for("train"), flow.timeout_for("collect")) == (600, 60)
    check_timeouts(flow, ["collect", "train"])
    with pytest.raises(ConfigError, match="flow.stage_timeout_seconds: no stage named trian"):
        check_timeouts(section("flow", stage_timeout_seconds={"trian": 5}), ["collect", "train"])
    with pytest.raises(ValueError, match="train: a time limit must be above 0"):
        section("flow", stage_timeout_seconds={"train": 0})


def test_prefect_yaml_declares_the_deployment_plumber_serve_serves() -> None:
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    spec = deployment.spec(load_params(ROOT / "params.yaml").flow.serve)
    [entry] = [d for d in declared if d["name"] == spec["name"]]
    assert {key: entry[key] for key in spec} == spec


def test_every_deployment_in_prefect_yaml_names_a_flow() -> None:
    import importlib

    from prefect import Flow

    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert [d["name"] for d in declared] == ["plumber-daily", "plumber-reproduce-weekly"]
    for entry in declared:
        path, _, name = entry["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, name), Flow), entry["entrypoint"]


@pytest.mark.parametrize(("overlap", "strategy"), [("wait", "ENQUEUE"), ("cancel", "CANCEL_NEW")])
def test_the_served_deployment_allows_one_run_at_a_time(overlap: str, strategy: str) -> None:
    serve = section("flow.serve", cron="30 5 * * 1-5", timezone="Europe/Paris", overlap=overlap)
    built = deployment.build(serve, ROOT)
    assert built.concurrency_limit == 1
    assert built.concurrency_options.collision_strategy.value == strategy
    [schedule] = built.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 5 * * 1-5", "Europe/Paris")
    assert built.parameters == {"root": str(ROOT)}
    with pytest.raises(ConfigError, match="flow.serve.cron"):
        deployment.build(section("flow.serve", cron="61 * * * *"), ROOT)


def test_the_summary_reads_as_a_report(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path)
    stages = [
        {"stage": "collect", "outcome": "ran", "seconds": 1.25, "note": ""},
        {"stage": "validate", "outcome": "unchanged", "seconds": 0.1, "note": ""},
        {"stage": "train", "outcome": "skipped", "seconds": 0.0, "note": "no retrain needed"},
    ]
    release = {
        "decision": "no-change", "reasons": ["improves by less than 0.005"], "version": "2",
        "champion_before": "1", "champion_after": "1", "forced": False, "repaired": [],
        "compared": {"candidate": {"recall_at_precision": 0.749},
                     "champion (same rows)": {"recall_at_precision": 0.753}},
    }  # fmt: skip
    report = summary.build(
        paths, {"id": "abc", "name": "quiet-fox"}, stages,
        {"retrain": True, "reason": "966 new rows"}, release, ["train.lr=0.002"],
    )  # fmt: skip
    assert report["rows"] == {"read": {}, "new": {}, "read_total": 0, "new_total": 0,
                              "quarantined": 0}  # fmt: skip
    assert "- **Rows:** nothing collected;" in summary.markdown(report)
    # What collect counted: rows read (incremental reads overlap) and rows new, per source.
    write_json(paths.collect_counts, {"flights": {"read": 918, "new": 0},
                                      "planes": {"read": 0, "new": 0},
                                      "weather": {"read": 72, "new": 24}})  # fmt: skip
    report = summary.build(
        paths, {"id": "abc", "name": "quiet-fox"}, stages,
        {"retrain": True, "reason": "966 new rows"}, release, ["train.lr=0.002"],
    )  # fmt: skip
    text = summary.markdown(report)
    assert "- **Rows:** 990 read, 24 new (flights 918 read, 0 new; weather 72 read, 24 new)" in text
    assert "| collect | ran | 1.2 |" in text or "| collect | ran | 1.3 |" in text
    assert "| train | skipped (no retrain needed) | 0.0 |" in text
    assert "Parameters overridden: train.lr=0.002" in text
    assert "**Retrain policy:** retrain: 966 new rows" in text
    assert "no-change, candidate version 2; champion 1 (unchanged)" in text
    assert "| metric | candidate | champion (same rows) |" in text
    assert "| recall_at_precision | 0.7490 | 0.7530 |" in text


def test_the_mlflow_run_is_a_link_to_the_ui_that_serves_its_store(tmp_path, monkeypatch) -> None:
    paths = Paths.at(tmp_path)
    paths.models.mkdir()
    (paths.models / "train.json").write_text('{"run_id": "r1", "experiment_id": "3"}')
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert summary.mlflow_run(paths) == {  # the default store: `make ui`'s address
        "run_id": "r1", "experiment_id": "3", "served_by": "`make ui`",
        "url": "http://127.0.0.1:5000/#/experiments/3/runs/r1?workflowType=machine_learning",
    }  # fmt: skip
    makefile = (ROOT / "Makefile").read_text()
    assert "mlflow ui --app-name plumber --host 127.0.0.1 --port 5000 " in makefile  # same
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:pw@mlflow.internal:5000/")
    assert summary.mlflow_run(paths)["url"] == (
        "http://bob:***@mlflow.internal:5000/#/experiments/3/runs/r1?workflowType=machine_learning"
    )


@pytest.mark.slow  # starts processes (or trains): make test-fast leaves it out
def test_a_stage_past_its_time_limit_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('INFO tasks.train: epoch 1', flush=True)\n"
        "time.sleep(60)\n"
    )
    lines: list[str] = []
    started = time.monotonic()
    code, tail, timed_out = run_captured(
        [sys.executable, "-c", script], tmp_path, {}, timeout=2, on_line=lines.append
    )
    assert timed_out and code != 0 and time.monotonic() - started < 20
    assert lines == tail == ["INFO tasks.train: epoch 1"]
    grandchild = int(pid_file.read_text())
    assert wait_until(lambda: gone(grandchild), timeout=30), f"process {grandchild} still runs"


def gone(pid: int) -> bool:
    """No such process, or a zombie awaiting its reaper."""
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1]
    except FileNotFoundError:
        return True


def test_stage_output_is_relayed_at_its_level(caplog) -> None:
    relay = _relay("validate")
    with caplog.at_level(logging.DEBUG, logger="flows.stage.validate"):
        relay("WARNING tasks.validate: weather: 1 quarantined")
        relay("Running stage 'validate':")
        relay("plain text")
        relay("")
        relay("error: weather: 60.00% of 72 rows rejected")  # the step's closing line
        relay("disk full: no space left on the device holding /data/raw (0.0 MiB free there)")
        relay("ERROR: failed to reproduce 'validate'")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "tasks.validate: weather: 1 quarantined"),
        ("DEBUG", "Running stage 'validate':"),
        ("INFO", "plain text"),
        ("ERROR", "error: weather: 60.00% of 72 rows rejected"),
        ("ERROR", "disk full: no space left on the device holding /data/raw (0.0 MiB free there)"),
        ("ERROR", "ERROR: failed to reproduce 'validate'"),
    ]


def test_the_failure_message_is_the_stages_own_error_line() -> None:
    lines = ["INFO x: y", "error: weather: weather_2013-01-05.csv is empty",
             "ERROR: failed to reproduce 'collect'"]  # fmt: skip
    assert last_error(lines) == "weather: weather_2013-01-05.csv is empty"
    assert last_error(["ERROR: failed to reproduce 'collect'", ""]) == (
        "failed to reproduce 'collect'"
    )
    assert last_error(["Traceback ...", "KeyError: 'x'"]) == "KeyError: 'x'"
    assert last_error(["stopped: SIGTERM received before the step finished"]) == (
        "SIGTERM received before the step finished"
    )


@pytest.mark.parametrize(
    ("lines", "code", "says"),
    [
        # A stage stopped mid-way: its last log line is not a reason.
        (["INFO tasks.train: epoch 5: loss 0.51"], -9,
         "it was killed by SIGKILL (exit -9), without an error line"),
        (["INFO tasks.train: epoch 5: loss 0.51"], 128 + 15,
         "it was killed by SIGTERM (exit 143), without an error line"),
        (["INFO tasks.train: epoch 5"], 3, "it exited 3 without an error line"),
        (["INFO tasks.train: epoch 5",
          "ERROR: failed to reproduce 'train': failed to run: python -m tasks.train, exited with -9"],
         1, "its command was killed by SIGKILL (failed to reproduce 'train'"),
        (["ERROR: failed to reproduce 'train': failed to run: python -m tasks.train, exited with 137"],
         1, "its command was killed by SIGKILL (failed to reproduce 'train'"),
        ([], None, "it ended without an error line"),
    ],
)  # fmt: skip
def test_a_stage_without_its_own_error_line_is_named_by_how_it_ended(lines, code, says) -> None:
    assert last_error(lines, code).startswith(says)


def test_a_bad_set_is_exit_2_before_the_flow_starts(tmp_path: Path, capsys) -> None:
    from flows.cli import main

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    before = (tmp_path / "params.yaml").read_text()
    assert main(["--root", str(tmp_path), "run", "--set", "train.lr=-1"]) == 2
    assert "error: overrides: train.lr: Input should be greater than 0" in capsys.readouterr().err
    assert main(["--root", str(tmp_path), "run", "--set", "serve.cron=x"]) == 2
    assert "only validate, featurize, train, evaluate, release" in capsys.readouterr().err
    assert main(["--root", str(tmp_path), "run", "--set", "train.hidden=[64"]) == 2
    said = capsys.readouterr().err
    assert said.strip() == ("error: --set train.hidden: '[64' is not a YAML value (expected ',' "
                            "or ']', but got '<stream end>'); e.g. train.hidden=[64,32]")  # fmt: skip
    assert (tmp_path / "params.yaml").read_text() == before
    assert not (tmp_path / "var" / "last_run.json").exists()  # no flow run was started


@pytest.fixture
def faulty_stages(tmp_path: Path) -> Path:
    """A DVC project without git, with stages that fail, stall or are busy."""
    import subprocess

    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path,
                   check=True)  # fmt: skip
    stages = {
        "fails": "python -c \"import sys; print('error: weather: bad.csv is empty', "
        'file=sys.stderr); sys.exit(1)"',
        "stalls": 'python -c "import time; time.sleep(60)"',
        "busy": "python -c \"import sys; print('busy: the release lock'); sys.exit(75)\"",
    }
    spec = {name: {"cmd": cmd} for name, cmd in stages.items()}
    # With a dependency: a stage without any is always run, like collect.
    spec["works"] = {"cmd": "python -c \"print('INFO tasks.x: done'); open('out.txt', 'w')\"",
                     "deps": ["input.txt"], "outs": ["out.txt"]}  # fmt: skip
    (tmp_path / "input.txt").write_text("x")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": spec}))
    return tmp_path


@pytest.mark.slow  # starts processes (or trains): make test-fast leaves it out
def test_a_stage_runs_through_dvc_and_its_failures_are_named(faulty_stages: Path) -> None:
    from flows.stages import RAN, UNCHANGED, StageTimeout, reproduce_stage
    from tasks.core.errors import Busy, StepError

    assert reproduce_stage(faulty_stages, "works", lock_timeout=5).outcome == RAN
    assert reproduce_stage(faulty_stages, "works", lock_timeout=5).outcome == UNCHANGED
    with pytest.raises(StepError, match="^weather: bad.csv is empty$"):
        reproduce_stage(faulty_stages, "fails", lock_timeout=5)
    with pytest.raises(Busy, match="the release lock"):
        reproduce_stage(faulty_stages, "busy", lock_timeout=5)
    started = time.monotonic()
    with pytest.raises(StageTimeout, match=r"stopped after 2 s \(flow.stage_timeout_seconds"):
        reproduce_stage(faulty_stages, "stalls", lock_timeout=5, timeout=2)
    assert time.monotonic() - started < 30


def test_a_busy_stage_or_a_full_disk_is_not_retried() -> None:
    from flows.steps import _worth_retrying
    from tasks.core.errors import Busy, DiskFull, StepError

    class Failed:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def result(self, raise_on_failure: bool = True) -> Exception:
            return self.error

    assert not _worth_retrying(None, None, Failed(Busy("another plumber run")))
    assert not _worth_retrying(None, None, Failed(DiskFull("no space left")))
    assert _worth_retrying(None, None, Failed(StepError("connection reset")))


def test_a_prefect_server_gone_is_told_from_other_failures() -> None:
    import httpx

    from flows.runs import _server_gone

    try:
        try:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        except httpx.ConnectError as exc:
            raise RuntimeError("could not set the flow run's state") from exc
    except RuntimeError as wrapped:
        assert _server_gone(wrapped)  # as Prefect wraps it
    assert not _server_gone(ValueError("a bug"))
