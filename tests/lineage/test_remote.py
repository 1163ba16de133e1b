"""Which objects a DVC remote holds, checked against a recorded dvc.lock."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tasks.core.secrets import without_credentials
from tasks.lineage import remote

SPEC = {"stages": {
    "train": {"outs": [{"models/model.pt": {"persist": True}},
                       {"models/train.json": {"cache": False}}]},
    "evaluate": {"metrics": [{"reports/metrics.json": {"cache": False}}]},
}}  # fmt: skip


def put(store: Path, content: bytes, suffix: str = "") -> str:
    md5 = hashlib.md5(content).hexdigest() + suffix
    path = store / "files/md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return md5


def test_missing_names_the_outputs_and_files_the_remote_lacks(tmp_path: Path) -> None:
    store = tmp_path / "remote"
    model = put(store, b"weights")
    kept = hashlib.md5(b"day one").hexdigest()
    put(store, b"day one")
    lost = hashlib.md5(b"day two").hexdigest()  # never pushed
    listing = json.dumps([{"md5": kept, "relpath": "flights/2013-01-01.parquet"},
                          {"md5": lost, "relpath": "flights/2013-01-02.parquet"}]).encode()  # fmt: skip
    folder = hashlib.md5(listing).hexdigest() + ".dir"
    (store / "files/md5" / folder[:2]).mkdir(parents=True, exist_ok=True)
    (store / "files/md5" / folder[:2] / folder[2:]).write_bytes(listing)
    lock = {"stages": {
        "validate": {"outs": [{"path": "data/validated", "md5": folder}]},
        "train": {"outs": [{"path": "models/model.pt", "md5": model},
                           {"path": "models/train.json", "md5": "0" * 32}]},
        "evaluate": {"outs": [{"path": "reports/test_predictions.parquet", "md5": "f" * 32}]},
    }}  # fmt: skip
    outs = remote.cached_outs(lock, SPEC)
    assert [o[1] for o in outs] == [
        "data/validated", "models/model.pt", "reports/test_predictions.parquet"
    ]  # models/train.json is not cached: git's to keep, never pushed  # fmt: skip
    target = remote.Remote("r", str(store), {"url": str(store)})
    checked, gone = remote.missing(target, outs)
    assert checked == 3 + 2  # three outputs, two files in the folder
    assert gone == ["data/validated/flights/2013-01-02.parquet", "reports/test_predictions.parquet"]


def test_a_record_never_holds_credentials() -> None:
    assert without_credentials("s3://key:secret@bucket/dvc") == "s3://bucket/dvc"
    assert without_credentials("https://user@host/dvc") == "https://host/dvc"
    assert without_credentials("/srv/dvc-remote") == "/srv/dvc-remote"


def test_a_record_is_read_through_the_configured_remote_of_its_url(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc/config").write_text(
        "['remote \"shared\"']\n    url = s3://bucket/dvc\n    endpointurl = http://127.0.0.1:9000\n"
    )
    recorded = {"name": "origin", "url": "s3://bucket/dvc"}
    chosen = remote.for_record(root, recorded)
    assert chosen.name == "shared" and chosen.options["endpointurl"] == "http://127.0.0.1:9000"
    elsewhere = remote.for_record(root, {"name": "local", "url": "/srv/remote"})
    assert elsewhere.options == {"url": "/srv/remote"}
    given = remote.for_record(root, recorded, override="/mnt/copy")
    assert given.url == "/mnt/copy"


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_a_push_that_keeps_failing_names_the_remote_and_dvcs_reason(tmp_path: Path, caplog) -> None:
    import subprocess
    import sys

    import pytest

    from tasks.core.errors import StepError

    root = tmp_path / "project"
    root.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    (root / "blocker").write_text("a file where the remote's folder should be\n")
    (root / ".dvc/config").write_text(
        "[core]\n    remote = shared\n    no_scm = true\n    analytics = false\n"
        f"['remote \"shared\"']\n    url = {root / 'blocker' / 'remote'}\n"
    )
    (root / "data.txt").write_text("rows\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data.txt"], cwd=root, check=True)
    target = remote.configured(root)
    assert target.to_json() == {"name": "shared", "url": str(root / "blocker" / "remote")}
    with pytest.raises(StepError) as failed:
        remote.push(root, target, attempts=2, delay=0.0, timeout=120)
    message = str(failed.value)
    assert message.startswith(
        f"the data could not be pushed to the DVC remote shared ({root / 'blocker' / 'remote'}) "
        "in 2 attempt(s): "
    )
    assert "attempt 2 of 2" in caplog.text  # retried once before giving up


def test_no_remote_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pytest

    from tasks.core.errors import StepError

    subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True
    )
    with pytest.raises(StepError, match=r"no DVC remote '' to record the data in \(lineage.remote; "
                       r"configured: none\); add one: dvc remote add -d NAME URL"):  # fmt: skip
        remote.configured(tmp_path)


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_an_object_store_that_is_down_is_named_with_its_address(tmp_path: Path) -> None:
    """An S3 remote whose object store answers nothing (a closed port on loopback): the
    error names the store and its address, and DVC's reason, never DVC's footer."""
    import socket
    import subprocess
    import sys

    import pytest

    from tasks.core.errors import StepError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and closed once the block ends
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    (root / ".dvc/config").write_text(
        "[core]\n    remote = store\n    no_scm = true\n    analytics = false\n"
        "['remote \"store\"']\n    url = s3://plumber/dvc\n"
        f"    endpointurl = http://127.0.0.1:{port}\n"
    )
    (root / "data.txt").write_text("rows\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data.txt"], cwd=root, check=True)
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        with pytest.raises(StepError) as failed:
            remote.push(root, remote.configured(root), attempts=1, delay=0.0, timeout=300)
    message = str(failed.value)
    assert message.startswith(
        "the data could not be pushed to the DVC remote store (s3://plumber/dvc, the object "
        f"store at http://127.0.0.1:{port}) in 1 attempt(s): "
    ), message
    assert "Having any troubles" not in message and "dvc.org/support" not in message
