from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks.core.paths import Paths
from tests.factories import MiniProject

# Log lines of tasks.* outside a flow run stay local (as `plumber` sets it), in every test.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Prefect's home for the tests' own process: a folder of this session's, removed at its end,
# not the checkout's var/prefect (prefect.toml's): importing the tests writes nothing into
# the repository. Commands the tests start get their copy's own (tests/factories.env_for).
PREFECT_HOME = tempfile.mkdtemp(prefix="plumber-tests-prefect-")
os.environ["PREFECT_HOME"] = PREFECT_HOME

PG_URL = os.environ.get("PLUMBER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


# A developer's stack (PLUMBER_STACK, from `make stack-up`) never reaches the tests: each
# test that wants a stack starts its own.
for _key in ("PLUMBER_STACK", "PLUMBER_LOCKS_URL", "PLUMBER_DVC_REMOTE"):
    os.environ.pop(_key, None)


@pytest.fixture(autouse=True)
def _isolated_mlflow() -> Iterator[None]:
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI: undo both after a test,
    so one test's store never leaks into another's (or into its subprocesses)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def services_required() -> bool:
    return os.environ.get("PLUMBER_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """PostgreSQL for tests that need it: skipped when unreachable, unless CI requires it."""
    from tasks.data.sources.sql import safe_url

    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {safe_url(PG_URL)} ({type(exc).__name__})"
        if services_required():
            pytest.fail(f"{reason}, and PLUMBER_REQUIRE_SERVICES=1 requires it")
        pytest.skip(f"{reason}; set PLUMBER_TEST_PG_URL to run these tests")
    return PG_URL


@pytest.fixture
def pg_table(pg_url: str) -> Iterator[str]:
    """A fresh table name in PostgreSQL, dropped afterwards."""
    name = f"flights_{uuid.uuid4().hex[:10]}"
    yield name
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))
    engine.dispose()


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """The URL of a database of its own on the test PostgreSQL, dropped afterwards."""
    import psycopg

    name = f"plumbertest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def project(tmp_path: Path) -> MiniProject:
    return MiniProject(tmp_path)


@pytest.fixture
def paths(project: MiniProject) -> Paths:
    return Paths.at(project.root)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The server-log canary (tests/server_logs.py): an error in a server's own log fails
    the suite, naming the line, even when every test passed."""
    from tests.server_logs import problems

    shutil.rmtree(PREFECT_HOME, ignore_errors=True)
    factory = getattr(session.config, "_tmp_path_factory", None)
    try:
        base = factory.getbasetemp() if factory is not None else None
    except (OSError, ValueError):
        base = None
    if base is None or not base.exists():
        return
    found = problems(base)
    if not found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["server-log canary: errors in the servers' own logs (tests/server_logs.py):",
             *found]  # fmt: skip
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
