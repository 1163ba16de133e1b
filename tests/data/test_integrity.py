"""Data faults with real files: a value that does not fit its type upstream, a drop file
replaced by a corrected one, a partition deleted or altered on disk, a byte flipped in the
DVC cache. Each is detected, named, and repaired where a good copy exists; nothing is lost."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from tasks import collect, validate
from tasks.core.config import load_params
from tasks.core.errors import SourceError, StepError
from tasks.core.io import read_json
from tasks.core.paths import Paths
from tasks.data import integrity
from tasks.ops.status import status
from tests.factories import MiniProject, file_bytes, weather_rows

# Each test builds a DVC project and runs DVC: make test-fast leaves them out.
pytestmark = pytest.mark.slow

DAY = dt.date(2013, 3, 1)
BIN = Path(sys.executable).parent
COLLECT_STAGE = """stages:
  collect:
    cmd: python -m tasks.collect
    always_changed: true
    params: [collect]
    outs:
      - data/raw:
          persist: true
"""


def run_collect(project: MiniProject) -> dict:
    paths = Paths.at(project.root)
    return collect.run(load_params(paths.params).collect, paths)


def run_validate(project: MiniProject) -> dict:
    paths = Paths.at(project.root)
    return validate.run(load_params(paths.params), paths)


def flip_byte(path: Path, offset: int = 100) -> None:
    os.chmod(path, 0o644)  # DVC keeps cache files read-only
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def collected(project: MiniProject) -> MiniProject:
    """The mini project as a DVC project whose collect stage has run once."""
    project.add_days(DAY, 3)
    (project.root / "dvc.yaml").write_text(COLLECT_STAGE)
    dvc(project.root, "init", "--no-scm", "-q")
    remote = project.root / "var" / "remote"
    dvc(project.root, "remote", "add", "-d", "local", str(remote))
    dvc(project.root, "repro", "collect")
    return project


# --- item 10: a value that does not fit its declared type upstream ---------------------------


def test_text_in_a_real_column_is_quarantined_naming_it_and_the_rest_flows_on(
    project: MiniProject,
) -> None:
    project.add_days(DAY, 2)
    with project.engine.begin() as conn:  # SQLite stores text in a REAL column as given
        conn.execute(sa.text(f"UPDATE {project.table} SET dep_delay = 'abc' "
                             "WHERE flight = 2 AND day = 1"))  # fmt: skip
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["collect"]["chunk_rows"] = 3  # the bad value's chunk, typed apart from the others
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    run_collect(project)  # no traceback, no stop: the other rows are collected
    raw = pd.read_parquet(project.root / "data/raw/flights/2013-03-01.parquet")
    assert raw["dep_delay"].dtype == "float64"  # the column keeps its type
    bad = raw[raw["_invalid"].notna()]
    assert list(bad["flight"]) == [2] and bad["_invalid"].iloc[0] == '{"dep_delay": "abc"}'

    report = run_validate(project)
    assert report["flights"]["quarantined"] == 1
    assert report["flights"]["reasons"] == {"dep_delay: not a number": 1}
    assert report["flights"]["rows_out"] == 7
    quarantined = pd.read_parquet(project.root / "data/quarantine/flights/2013-03-01.parquet")
    assert quarantined["_reasons"].tolist() == ["dep_delay: not a number"]
    assert "_invalid" not in pd.read_parquet(project.root / "data/validated/flights").columns

    # Corrected upstream (a newer version of the row): the bad value leaves no trace.
    with project.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {project.table} SET dep_delay = 7, "
                             "updated_at = '2013-03-05 00:00:00.000000' "
                             "WHERE flight = 2 AND day = 1"))  # fmt: skip
    run_collect(project)
    raw = pd.read_parquet(project.root / "data/raw/flights/2013-03-01.parquet")
    assert "_invalid" not in raw.columns and raw.loc[raw["flight"] == 2, "dep_delay"].item() == 7
    assert run_validate(project)["flights"]["quarantined"] == 0


# --- item 11: a drop file replaced by a corrected version ------------------------------------


def test_a_corrected_file_replaces_what_its_earlier_version_contributed(tmp_path: Path) -> None:
    disturbed = MiniProject(tmp_path / "disturbed")
    disturbed.add_days(DAY, 2)
    bad = weather_rows(DAY + dt.timedelta(days=1)).rename(columns={"temp": "temperature"})
    bad_file = disturbed.drop_weather(DAY + dt.timedelta(days=1), bad)
    run_collect(disturbed)
    with pytest.raises(StepError) as err:
        run_validate(disturbed)
    assert str(err.value) == (
        "weather: schema changed in 1 file(s): weather_2013-03-02.csv: column(s) 'temp' "
        "missing and 'temperature' new (renamed?)"
    )

    disturbed.drop_weather(DAY + dt.timedelta(days=1))  # upstream replaces it, corrected
    os.utime(bad_file, ns=(0, 10**18))  # a new mtime whatever the clock's resolution
    run_collect(disturbed)
    run_validate(disturbed)  # passes now

    undisturbed = MiniProject(tmp_path / "undisturbed")
    undisturbed.add_days(DAY, 2)
    run_collect(undisturbed)
    assert file_bytes(disturbed.root / "data/raw/weather") == file_bytes(
        undisturbed.root / "data/raw/weather"
    )


# --- item 9: a partition deleted or altered on disk ------------------------------------------


def test_a_deleted_or_altered_partition_is_noticed_and_restored_from_the_dvc_cache(
    collected: MiniProject,
) -> None:
    root = collected.root
    paths = Paths.at(root)
    good = file_bytes(root / "data/raw")
    (root / "data/raw/weather/2013-03-02.parquet").unlink()
    flip_byte(root / "data/raw/flights/2013-03-01.parquet")

    st = status(paths)  # never counts rows that are not there as collected
    assert st["sources"]["weather"]["damaged"] == ["2013-03-02.parquet"]
    assert st["sources"]["flights"]["damaged"] == []  # same size: only a hash tells
    assert st["sources"]["weather"]["rows"] == 2 * 72
    with pytest.raises(StepError, match=r"flights/2013-03-01.parquet was altered since collect"):
        run_validate(collected)  # validate never uses what collect did not write

    run_collect(collected)
    assert file_bytes(root / "data/raw") == good
    assert status(paths)["sources"]["weather"]["damaged"] == []

    (root / "data/raw/weather/2013-03-01.parquet").unlink()
    with pytest.raises(StepError, match=r"weather/2013-03-01.parquet is missing \(the manifest"):
        run_validate(collected)


def test_without_a_cached_copy_a_lost_partition_is_read_again_from_its_source(
    collected: MiniProject,
) -> None:
    root = collected.root
    good = file_bytes(root / "data/raw")
    shutil.rmtree(root / ".dvc/cache")
    (root / "data/raw/weather/2013-03-02.parquet").unlink()
    (root / "data/raw/flights/2013-03-03.parquet").unlink()
    run_collect(collected)  # the drop file and the SQL rows of those days, read again
    assert file_bytes(root / "data/raw") == good

    with collected.engine.begin() as conn:  # gone upstream too: nothing can restore it
        conn.execute(sa.text(f"DELETE FROM {collected.table} WHERE day = 3"))
    (root / "data/raw/flights/2013-03-03.parquet").unlink()
    before = read_json(root / "data/raw/manifest.json")
    with pytest.raises(SourceError, match=r"flights: partition\(s\) 2013-03-03 lost"):
        run_collect(collected)
    assert read_json(root / "data/raw/manifest.json") == before  # nothing recorded


# --- item 8: a byte flipped in the DVC cache -------------------------------------------------


def test_a_corrupt_cache_object_is_repaired_or_never_pushed(collected: MiniProject) -> None:
    from flows.cli import main

    root = collected.root
    partition = root / "data/raw/flights/2013-03-01.parquet"
    obj = integrity.dvc_object(root, partition)
    assert obj is not None and obj.exists()
    flip_byte(obj)
    repaired, damaged = integrity.verify_cache(root)
    assert (
        damaged == []
        and len(repaired) == 1
        and "data/raw/flights/2013-03-01.parquet" in repaired[0]
    )
    assert integrity.md5_file(obj) == obj.parent.name + obj.name  # rewritten from the workspace

    flip_byte(obj)
    flip_byte(partition)  # the workspace copy is bad too: nothing good to rewrite it from
    assert main(["--root", str(root), "push"]) == 1
    assert not (root / "var/remote").exists()  # nothing was pushed
    repaired, damaged = integrity.verify_cache(root)
    assert (
        repaired == []
        and "data/raw/flights/2013-03-01.parquet, stage collect) is corrupt" in damaged[0]
    )


def test_a_corrupt_object_in_the_remote_fails_the_pull_instead_of_checking_it_out(
    collected: MiniProject, tmp_path: Path
) -> None:
    root = collected.root
    dvc(root, "config", "remote.local.verify", "true")  # as the project's .dvc/config does
    dvc(root, "push", "-q")
    remote_obj = next(p for p in (root / "var/remote").rglob("*") if p.is_file() and
                      not p.name.endswith(".dir") and p.stat().st_size > 200)  # fmt: skip
    flip_byte(remote_obj)
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy(root / name, clone / name)
    shutil.copytree(root / ".dvc", clone / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "dvc", "pull"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0
    # Whatever was checked out is intact; the corrupt object was not used.
    for path in (clone / "data/raw").rglob("*.parquet") if (clone / "data/raw").exists() else []:
        assert integrity.md5_file(path) != integrity.md5_file(remote_obj)
