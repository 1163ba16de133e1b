"""Fault drills on the real demo, with real processes and real signals: `kill -9` of a
running `plumber run` (its whole process group, and of the training process alone), a
release killed at its smoke test, SIGTERM, an unreachable tracking server carrying a
password, and a `dvc repro` typed by hand during a run.

After each: the exit code and message, no stage process left behind, no MLflow run left
RUNNING, the Prefect run recorded as crashed, the champion on a registered, smoke-tested
version, and the next plain `plumber run` finishing what the killed one left undone.
The drills build on each other, in order, in one copy of the repository.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.factories import (
    LENIENT_GATE,
    copy_repo,
    env_for,
    file_bytes,
    leftovers,
    small_demo_params,
    stop_local_server,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.drill]

BIN = Path(sys.executable).parent


def plumber(repo: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["plumber", *args], cwd=repo, env=env_for(**extra),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def start(repo: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    """`plumber ARGS` in a process group of its own, as a shell would start it."""
    path = repo / "var" / f"drill-{time.monotonic_ns()}.log"
    with path.open("w") as log:
        proc = subprocess.Popen(["plumber", *args], cwd=repo, env=env_for(**extra), text=True,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    LOGS[proc.pid] = path
    return proc


LOGS: dict[int, Path] = {}


def output_of(proc: subprocess.Popen[str]) -> str:
    return LOGS[proc.pid].read_text()


def wait_for(what: str, check: Callable[[], object], timeout: float = 300) -> object:
    found = wait_until(check, timeout)
    assert found, f"gave up waiting for {what}"
    return found


def stage_running(repo: Path, stage: str) -> Callable[[], dict | None]:
    def check() -> dict | None:
        try:
            holder = json.loads((repo / "var" / "stage.holder.json").read_text())
        except (OSError, ValueError):
            return None
        return holder if holder.get("what") == f"the {stage} stage" else None

    return check


def training_record(repo: Path) -> Callable[[], dict | None]:
    """A new training's intent record, once its MLflow run has started (records left by
    an earlier killed training are not it)."""
    earlier = {p.name for p in (repo / "var" / "journal").glob("training-*.json")}

    def check() -> dict | None:
        for path in (repo / "var" / "journal").glob("training-*.json"):
            try:
                record = json.loads(path.read_text())
            except ValueError:
                continue
            if record.get("mlflow_run_id") and path.name not in earlier:
                return record
        return None

    return check


def no_leftovers(repo: Path) -> None:
    wait_for("the stage processes to end", lambda: not leftovers(repo), timeout=30)


def status(repo: Path) -> dict:
    done = plumber(repo, "status", "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def mlflow_runs(repo: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'var/mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name("plumber")
    return list(client.search_runs([experiment.experiment_id])) if experiment else []


def registry(repo: Path) -> tuple[object, list]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'var/mlflow/mlflow.db'}")
    champion = client.get_model_version_by_alias("flight-delay", "champion")
    return champion, list(client.search_model_versions("name='flight-delay'"))


def prefect_state(repo: Path, flow_run_id: str) -> str:
    return str(prefect_run(repo, flow_run_id)["state"]["type"])


def prefect_run(repo: Path, flow_run_id: str) -> dict:
    import httpx

    state = json.loads((repo / "var/prefect-server/server.json").read_text())
    answer = httpx.get(f"{state['url']}/api/flow_runs/{flow_run_id}", timeout=30)
    return dict(answer.json())


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    dest = copy_repo(tmp_path_factory.mktemp("faults"))
    assert plumber(dest, "demo", "init", "--now", "2013-01-04").returncode == 0
    # Prefect's zombie detection after 90 s without a heartbeat (its floor), not 10 min.
    small_demo_params(dest, release=LENIENT_GATE, flow={"heartbeat_grace_seconds": 90})
    yield dest
    stop_local_server(dest)


def test_kill_9_of_the_training_process_fails_the_run_naming_how(repo: Path) -> None:
    training = training_record(repo)
    run = start(repo, "run")
    record = wait_for("training to start", training)
    assert isinstance(record, dict)
    os.kill(record["pid"], signal.SIGKILL)  # as the kernel's OOM killer would
    assert run.wait(300) == 1
    out = output_of(run)
    assert "error: stage train failed: its command was killed by SIGKILL" in out, out[-3000:]
    # On the terminal, lines and no traceback; the tracebacks are in the log file.
    assert "Traceback" not in out, out[-3000:]
    assert "Traceback" in (repo / "var/prefect/plumber.log").read_text()
    no_leftovers(repo)
    assert status(repo)["last_run"]["state"] == "FAILED"
    killed = [r for r in mlflow_runs(repo) if r.info.run_id == record["mlflow_run_id"]]
    assert killed[0].info.status == "RUNNING"  # nobody could end it: the next run will


def test_kill_9_of_the_whole_run_leaves_no_stage_behind(repo: Path) -> None:
    training = training_record(repo)
    run = start(repo, "run")
    wait_for("training to start", training)
    os.killpg(run.pid, signal.SIGKILL)  # kill -9 -PGID: the flow, and nothing else
    run.wait(30)
    no_leftovers(repo)  # the stage's guard saw the flow go and stopped the stage
    last = status(repo)["last_run"]
    assert last["state"] == "CRASHED" and "ended without recording an outcome" in last["reason"]
    assert prefect_state(repo, last["id"]) == "RUNNING"  # its heartbeats just stopped
    # Prefect's own zombie detection (flows/heartbeats.py) sets it Crashed, no run needed.
    crashed = wait_for(
        "the server to set the dead run Crashed by itself",
        lambda: time.sleep(2) or prefect_state(repo, last["id"]) == "CRASHED", timeout=600,
    )  # fmt: skip
    assert crashed and "no heartbeat for 90 s" in prefect_run(repo, last["id"])["state"]["message"]


def test_the_next_run_repairs_and_finishes_what_the_killed_runs_left(repo: Path) -> None:
    crashed = status(repo)["last_run"]["id"]
    done = plumber(repo, "run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "retrain: no trained model yet" in done.stdout
    assert "decision: released, candidate version 1" in done.stdout
    assert "crashed: its process" in done.stderr  # the previous run, written down
    assert prefect_state(repo, crashed) == "CRASHED"
    runs = mlflow_runs(repo)
    assert [r.info.status for r in runs].count("RUNNING") == 0
    reasons = sorted(r.data.tags.get("plumber.end_reason", "")[:22] for r in runs
                     if r.info.status == "KILLED")  # fmt: skip
    # One killed by the kernel (ended by this run), one stopped by its guard (ended itself).
    assert reasons == ["killed: its process (p", "stopped: SIGTERM receiv"[:22]]
    assert not list((repo / "var/journal").glob("*.json"))
    champion, _ = registry(repo)
    assert str(champion.version) == "1" and "smoke.latency_p99_ms" in champion.tags  # type: ignore[attr-defined]
    no_leftovers(repo)


def test_partitions_after_the_kills_equal_an_undisturbed_collection(
    repo: Path, tmp_path: Path
) -> None:
    clean = copy_repo(tmp_path / "clean")
    assert plumber(clean, "demo", "init", "--now", "2013-01-04").returncode == 0
    done = subprocess.run([sys.executable, "-m", "tasks.collect"], cwd=clean, env=env_for(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert file_bytes(repo / "data/raw") == file_bytes(clean / "data/raw")


def test_a_model_trained_but_never_evaluated_is_evaluated_by_the_next_run(repo: Path) -> None:
    run = start(repo, "run", "--force")
    wait_for("evaluate to start", stage_running(repo, "evaluate"))
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(30)
    no_leftovers(repo)
    done = plumber(repo, "run")  # no new data, no --force
    assert done.returncode == 0, done.stderr[-3000:]
    assert "retrain: finishing what a stopped run left: evaluate" in done.stdout
    assert "evaluate    ran" in done.stdout and "train       unchanged " in done.stdout
    assert "candidate version 2" in done.stdout  # the new candidate is judged


def test_a_release_killed_at_its_smoke_test_is_repaired_by_the_next_run(repo: Path) -> None:
    killed = plumber(repo, "run", "--force", PLUMBER_RELEASE_FAULT_AT="smoke")
    assert killed.returncode == -signal.SIGKILL
    _, versions = registry(repo)
    assert [v.tags["decision"] for v in versions if str(v.version) == "3"] == ["pending"]
    done = plumber(repo, "run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "repaired: version 3 (pending) marked abandoned" in done.stderr
    assert "awaits its release" in done.stdout and "candidate version 4" in done.stdout
    champion, versions = registry(repo)
    assert {str(v.version): v.tags["decision"] for v in versions}["3"] == "abandoned"
    assert "smoke.latency_p99_ms" in champion.tags  # type: ignore[attr-defined]
    assert [r.info.status for r in mlflow_runs(repo)].count("RUNNING") == 0
    no_leftovers(repo)


def test_sigterm_stops_the_run_and_records_it_as_crashed(repo: Path) -> None:
    training = training_record(repo)
    params = repo / "params.yaml"
    before = params.read_text()
    # A training long enough that the stop surely lands in it, however fast the machine.
    slow = yaml.safe_load(before)
    slow["train"].update(epochs=5000, patience=5000)
    params.write_text(yaml.safe_dump(slow, sort_keys=False))
    try:
        run = start(repo, "run", "--force")
        record = wait_for("training to start", training)
        assert isinstance(record, dict)
        run.send_signal(signal.SIGTERM)  # to the plumber process alone
        assert run.wait(120) == 128 + signal.SIGTERM
    finally:
        params.write_text(before)
    assert "stopped: SIGTERM received; the run is recorded as crashed" in output_of(run)
    no_leftovers(repo)
    last = status(repo)["last_run"]
    assert last["state"] == "CRASHED"  # written by the flow's own crash hook, at once
    assert prefect_state(repo, last["id"]) == "CRASHED"
    [run_of_training] = [r for r in mlflow_runs(repo) if r.info.run_id == record["mlflow_run_id"]]
    assert run_of_training.info.status == "KILLED"


def test_a_run_cancelled_from_prefect_stops_its_stage(repo: Path) -> None:
    import httpx

    training = training_record(repo)
    run = start(repo, "run", "--force")
    record = wait_for("training to start", training)
    assert isinstance(record, dict)
    flow_run = json.loads((repo / "var/last_run.json").read_text())["id"]
    server = json.loads((repo / "var/prefect-server/server.json").read_text())["url"]
    answer = httpx.post(  # what the UI's "Cancel" button does
        f"{server}/api/flow_runs/{flow_run}/set_state",
        json={"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True}, timeout=30,
    )  # fmt: skip
    answer.raise_for_status()
    assert run.wait(120) == 1
    assert "cancelled: cancelled during stage train: the flow run was cancelled" in output_of(run)
    no_leftovers(repo)
    assert prefect_state(repo, flow_run) == "CANCELLED"
    assert status(repo)["last_run"]["state"] == "CANCELLED"
    # The training ended KILLED if the stop reached it, FINISHED if it had just finished:
    # never left RUNNING.
    assert "RUNNING" not in [r.info.status for r in mlflow_runs(repo)]


def test_an_unreachable_tracking_server_fails_fast_and_its_password_goes_nowhere(
    repo: Path,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = f"pw-{uuid.uuid4().hex}"  # made here: not even this file holds it
    started = time.monotonic()
    done = plumber(repo, "run", "--force",
                   MLFLOW_TRACKING_URI=f"http://plumber:{secret}@127.0.0.1:{port}/")  # fmt: skip
    assert done.returncode == 1
    assert time.monotonic() - started < 120  # tracking.connect_*: three quick refusals
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and f"http://plumber:***@127.0.0.1:{port}" in last_line
    assert "MLflow tracking server" in last_line
    assert secret not in done.stdout + done.stderr
    leaked = [str(p) for p in repo.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []  # Prefect's database under var/ included
    no_leftovers(repo)


def test_a_dvc_repro_by_hand_and_a_run_never_run_stages_at_once(repo: Path) -> None:
    by_hand = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "evaluate"],
        cwd=repo, env=env_for(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    holder = wait_for("the hand-run evaluate", stage_running(repo, "evaluate"))
    assert isinstance(holder, dict)
    os.kill(holder["pid"], signal.SIGSTOP)  # evaluate keeps running for as long as we like
    try:
        run = start(repo, "run")
        wait_for("the run to wait", lambda: "waiting for" in output_of(run), timeout=120)
        time.sleep(2)
        assert "flows.stage.collect" not in output_of(run)  # collect has not started
    finally:
        os.kill(holder["pid"], signal.SIGCONT)
    out, _ = by_hand.communicate(timeout=300)
    assert by_hand.returncode == 0, out
    assert run.wait(300) == 0, output_of(run)[-3000:]
    # It said at once what it waited for (DVC's lock of the hand-run stage), then ran.
    waiting = next(line for line in output_of(run).splitlines() if "waiting for" in line)
    assert (
        "repro --force --single-item evaluate" in waiting and "flow.lock_timeout_seconds" in waiting
    )
    assert "collect     ran" in output_of(run)
    no_leftovers(repo)


def test_a_prefect_server_killed_mid_run_ends_in_one_line_and_the_next_run_records_it(
    repo: Path,
) -> None:
    params = repo / "params.yaml"
    before = params.read_text()
    quick = yaml.safe_load(before)
    quick["flow"]["server_retries"] = 2  # waits of 2 and 4 s per call, then the run ends
    params.write_text(yaml.safe_dump(quick, sort_keys=False))
    try:
        training = training_record(repo)
        run = start(repo, "run", "--force")
        wait_for("training to start", training)
        server = json.loads((repo / "var/prefect-server/server.json").read_text())
        os.killpg(server["pid"], signal.SIGKILL)  # the server and its workers, as a crash would
        killed = time.monotonic()
        code = run.wait(600)
        print(f"the run ended {time.monotonic() - killed:.0f} s after its server was killed")
    finally:
        params.write_text(before)
    out = output_of(run)
    assert code == 1, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out[-3000:]
    assert f"the Prefect server at {server['url']} stopped answering" in errors[0]
    assert "after 2 retries: flow.server_retries" in errors[0]
    assert "Traceback" not in out and "Error logging to API" not in out, out[-3000:]
    assert out.splitlines()[-1] == errors[0]  # its last words: no retries printed after
    # Tasks run in the flow's process: the work went on to its decision without the server.
    assert "the release decided: " in errors[0]
    no_leftovers(repo)
    last = status(repo)["last_run"]  # written by the run itself: its hooks could not run
    assert last["state"] == "CRASHED" and "stopped answering" in last["message"]
    assert last["decision"] in ("released", "rejected"), last
    # The next run starts a new local server on the same database and sets that end there.
    again = plumber(repo, "run")
    assert again.returncode == 0, again.stderr[-3000:]
    # Set by that run, or by the server's zombie detection once back, whichever came first.
    ended = prefect_run(repo, last["id"])["state"]
    assert ended["type"] == "CRASHED", ended
    assert "stopped answering" in ended["message"] or "no heartbeat" in ended["message"]
