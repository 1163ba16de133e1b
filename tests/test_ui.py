"""What a newcomer sees, in a real browser: headless Chromium (Debian's, driven by
Playwright) over the Prefect UI, the MLflow UI and `dvc plots show`'s page, after two
pipeline runs in a fresh copy (the first released, the second rejected).

The four questions docs/operations.md, "Finding your way in the UIs", answers, asked of the
rendered pages: which model is in production and why (the registry page: the champion
alias, the decision tags, the card); which data and code produced it (the version's tags);
what happened in the last run (the flow run's state name, the run summary's stage table);
did anything fail and why (the rejected run and version). Screenshots go to var/ui/ of
this checkout, for a person to look at.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import services_required
from tests.factories import (
    LENIENT_GATE,
    ROOT,
    copy_repo,
    env_for,
    small_demo_params,
    wait_for_http,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
# As root on a machine without a network: no sandbox, no calls home (each refused
# connection costs seconds), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = ROOT / "var" / "ui"
BIN = Path(sys.executable).parent
WAIT_MS = 60_000  # a page's content, on a busy machine


def sh(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=repo, env=env_for(), capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install -y chromium, as .ci/run does)"
        if services_required():
            pytest.fail(f"{reason}, and PLUMBER_REQUIRE_SERVICES=1 requires it")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def port_4200_taken() -> Iterator[None]:
    """Prefect's default port held by another program (another checkout's server, say), as
    on a shared machine: each checkout's UI must still show its own server's runs."""
    import socket

    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 4200))
        holder.listen()
    except OSError:  # already taken by something else: the same situation
        pass
    try:
        yield
    finally:
        holder.close()


@pytest.fixture(scope="module")
def two_runs(
    tmp_path_factory: pytest.TempPathFactory, port_4200_taken: None
) -> Iterator[dict[str, Any]]:
    """A fresh copy after a released run and a rejected one, its local Prefect server up
    (on another port than 4200, which is taken)."""
    from flows import local_server
    from tasks.core.paths import Paths

    repo = copy_repo(tmp_path_factory.mktemp("ui"))
    sh(repo, str(BIN / "plumber"), "demo", "init", "--now", "2013-01-04")
    small_demo_params(repo, release=LENIENT_GATE)
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "small demo")
    first = sh(repo, str(BIN / "plumber"), "run")
    # The same data, a latency budget no model meets: the candidate is rejected.
    sh(repo, str(BIN / "plumber"), "run", "--set", "release.max_p99_latency_ms=0.001")
    sh(repo, str(BIN / "dvc"), "plots", "show")
    state = local_server.read_state(Paths.at(repo))
    assert state is not None, "plumber run left no local Prefect server"
    assert state["port"] != 4200
    # The link Prefect prints for the run ("View at ..."), as a user would copy it.
    links = re.findall(
        r"View at (http\S+/runs/flow-run/[0-9a-f-]{36})", first.stderr + first.stdout
    )
    try:
        yield {"repo": repo, "prefect": state["url"], "api": f"{state['url']}/api", "train": json.loads((repo / "models/train.json").read_text()), "links": links}  # fmt: skip
    finally:
        local_server.stop(Paths.at(repo))


@pytest.fixture(scope="module")
def mlflow_ui(two_runs: dict[str, Any]) -> Iterator[str]:
    """`make ui` on a free port: the MLflow UI over the copy's default store."""
    import socket

    repo = two_runs["repo"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = f"sqlite:///{repo / 'var/mlflow/mlflow.db'}"
    log = (repo / "var" / "mlflow-ui.log").open("ab")  # read by the server-log canary
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "ui", "--app-name", "plumber", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", store],
        cwd=repo, env=env_for(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", server, "the MLflow UI")
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def new_tab(browser: Any) -> Any:
    """A tab in a context of its own: an empty profile (no cookies, no local storage)."""
    tab = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    tab.set_default_timeout(WAIT_MS)
    return tab


@pytest.fixture(scope="module")
def page(browser: Any) -> Any:
    return new_tab(browser)


def shoot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def shows(page: Any, *texts: str) -> str:
    """Wait until the page's visible text holds every one of `texts`; return that text."""
    page.wait_for_function(
        "texts => texts.every(t => document.body.innerText.includes(t))", arg=list(texts)
    )
    return str(page.inner_text("body"))


def words(text: str) -> str:
    return " ".join(text.split())


def flow_runs(api: str) -> dict[str, dict[str, Any]]:
    """The flow runs by state name, from the Prefect API."""
    request = urllib.request.Request(f"{api}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        return {run["state_name"]: run for run in json.loads(answer.read())}


def test_prefect_shows_each_run_by_its_decision(two_runs, page) -> None:
    runs = flow_runs(two_runs["api"])
    assert set(runs) == {"Released", "Rejected"}
    page.goto(f"{two_runs['prefect']}/runs")
    # Each run under its decision and tagged with it, in the runs list itself.
    shows(page, runs["Rejected"]["name"], runs["Released"]["name"], "Rejected", "Released",
          "decision:rejected", "candidate:2", "decision:released")  # fmt: skip
    shoot(page, "prefect-runs")

    run = runs["Rejected"]
    assert run["state"]["message"].startswith("candidate version 2 rejected: p99 single-row")
    # The run graph is drawn on a canvas: read the edges the page itself fetched to draw it.
    with page.expect_response(lambda r: f"/flow_runs/{run['id']}/graph" in r.url) as drawn:
        page.goto(f"{two_runs['prefect']}/runs/flow-run/{run['id']}")
    shows(page, run["name"], "Rejected", "decision:rejected", "candidate:2")
    shoot(page, "prefect-flow-run")
    nodes = dict((node_id, node) for node_id, node in drawn.value.json()["nodes"])
    # (the server lists an edge once per input that carries it: the set is what is drawn)
    parents = {node["label"]: sorted({nodes[p["id"]]["label"] for p in node["parents"]})
               for node in nodes.values()}  # fmt: skip
    chain = ["collect", "validate", "retrain-policy", "featurize", "train", "evaluate",
             "record", "release"]  # fmt: skip
    assert {step: parents[step] for step in chain[1:]} == {
        step: [before] for before, step in itertools.pairwise(chain)
    }, parents


def test_the_link_prefect_prints_opens_the_run_in_this_checkouts_ui(two_runs, browser) -> None:
    """Port 4200 is held by another listener: the checkout's server runs elsewhere, and its
    UI must call its own API (GET /ui-settings), not whatever answers on 4200."""
    with urllib.request.urlopen(f"{two_runs['prefect']}/ui-settings", timeout=30) as answer:
        assert json.loads(answer.read())["api_url"] == two_runs["api"]
    released = flow_runs(two_runs["api"])["Released"]
    assert two_runs["links"] == [f"{two_runs['prefect']}/runs/flow-run/{released['id']}"]
    tab = new_tab(browser)
    tab.goto(f"{two_runs['prefect']}/")  # from the home page, as a person would
    tab.get_by_role("link", name="Runs").first.click()
    shows(tab, released["name"], "Released")
    tab.goto(two_runs["links"][0])
    shows(tab, released["name"], "Released", "decision:released")
    shoot(tab, "prefect-printed-link")
    tab.context.close()


def test_a_new_browser_lands_in_model_training_from_the_mlflow_home_page(
    two_runs, mlflow_ui, browser
) -> None:
    tab = new_tab(browser)
    tab.goto(f"{mlflow_ui}/")
    tab.get_by_role("link", name="Experiments").first.click()
    tab.get_by_role("link", name="plumber", exact=True).first.click()
    # The experiment page settles on its layout's default tab: the runs, in Model training.
    tab.wait_for_url("**/experiments/*/runs?workflowType=machine_learning**")
    body = shows(tab, "Runs", "Models", "Model registry")
    for genai in ("Observability", "Judges", "Evaluation runs", "Detect Issues"):
        assert genai not in body, f"{genai!r} on the experiment page: the GenAI layout"
    shoot(tab, "mlflow-experiment-from-home")
    tab.get_by_role("link", name="Model registry").first.click()
    shows(tab, "flight-delay")
    tab.context.close()


def test_the_run_summary_artifact_renders_its_stage_table(two_runs, page) -> None:
    run = flow_runs(two_runs["api"])["Rejected"]
    request = urllib.request.Request(
        f"{two_runs['api']}/artifacts/filter", method="POST",
        data=json.dumps({"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as answer:
        [artifact] = [a for a in json.loads(answer.read()) if a["key"] == "plumber-run-summary"]
    page.goto(f"{two_runs['prefect']}/artifacts/artifact/{artifact['id']}")
    # Counts that match collect's log lines: 914 flights read again, none of them new.
    shows(page, "plumber run", "914 read, 0 new")
    cells = [c.strip() for c in page.locator("table td").all_inner_texts()]
    assert cells[:2] == ["collect", "ran"] and "validate" in cells, cells
    assert "ran (rejected)" in cells  # the release's row of the stage table
    shoot(page, "prefect-run-summary")


def test_the_registry_shows_the_champion_and_each_decision(two_runs, mlflow_ui, page) -> None:
    page.goto(f"{mlflow_ui}/#/models/flight-delay")
    page.get_by_text("Version 2", exact=True).first.wait_for()
    champion = words(page.get_by_role("row").filter(has_text="Version 1").first.inner_text())
    assert "@ champion" in champion and "decision : released" in champion  # alias and tag
    rejected = words(page.get_by_role("row").filter(has_text="Version 2").first.inner_text())
    assert "decision : rejected" in rejected and "gate.failed : budget.latency_p99_ms" in rejected
    assert "@ champion" not in rejected
    assert rejected.endswith("# Version 2: rejected")  # the card's first line
    shoot(page, "mlflow-registered-model")

    page.goto(f"{mlflow_ui}/#/models/flight-delay/versions/2")
    page.get_by_role("heading", name="Version 2: rejected").wait_for()
    shows(page, "Why: p99 single-row latency", "Every check and score")
    shoot(page, "mlflow-version-card")
    # The card links to every check the gate made (a link MLflow opens in a new tab).
    href = page.get_by_role("link", name="Every check and score").get_attribute("href")
    assert href and href.endswith("artifacts/evidence/version-2.md?workflowType=machine_learning")
    page.goto(f"{mlflow_ui}/{href}")
    body = shows(page, "version-2.md", "budget.latency_p99_ms", "Evidence for version 2: rejected")
    assert "Evaluations" not in body  # the model-training layout, not the GenAI one
    shoot(page, "mlflow-evidence")


def test_the_training_run_shows_its_per_epoch_curves_first(two_runs, mlflow_ui, page) -> None:
    from tasks.core.tracking import run_page

    train = two_runs["train"]
    page.goto(run_page(train["experiment_id"], train["run_id"], "model-metrics", f"{mlflow_ui}/"))
    body = shows(page, "epoch/train_loss", "test/model")
    assert body.index("epoch/train_loss") < body.index("test/model"), body[:2000]  # first
    assert "Evaluations" not in body and "Runs" in body  # a training run, not a GenAI one
    chart = page.locator(".js-plotly-plot, canvas, svg").first
    chart.wait_for()
    shoot(page, "mlflow-run-metrics")


def test_dvc_plots_draw_without_the_internet(two_runs, page) -> None:
    index = two_runs["repo"] / "dvc_plots" / "index.html"
    asked: list[str] = []

    def offline(route: Any) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            asked.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    try:
        page.goto(index.as_uri())
        charts = page.locator(".vega-embed svg, .vega-embed canvas")
        charts.first.wait_for()
        time.sleep(1)  # the rest of the charts
        assert charts.count() >= 3, page.content()[:2000]
        shoot(page, "dvc-plots")
    finally:
        page.unroute("**/*")
    assert asked == []
