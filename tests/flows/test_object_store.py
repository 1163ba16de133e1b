"""The loopback object store keeps what it acknowledged: writes survive SIGKILL of the
server (multipart uploads included, parallel writers included), deletes stay deleted, and a
torn last journal line is dropped, not fatal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flows.local_server import free_port
from flows.stack import answers

KEYS = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}


def serve(journal: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.object_store", "127.0.0.1", str(port), str(journal)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not answers(url + "/moto-api/"):
        assert proc.poll() is None, "the object store exited while starting"
        assert time.monotonic() < deadline, "the object store never answered"
        time.sleep(0.2)
    return proc, url


def client(url: str) -> Any:
    import boto3

    os.environ.update(KEYS)
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1")


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow  # starts processes for seconds: `make test`, not test-fast
def test_writes_survive_a_killed_server_multipart_and_parallel_included(tmp_path: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    journal = tmp_path / "writes.jsonl"
    proc, url = serve(journal)
    big = os.urandom(12 * 1024 * 1024)
    small = {f"dvc/files/md5/{i:02x}/obj": os.urandom(1000 + i) for i in range(24)}
    try:
        s3 = client(url)
        s3.create_bucket(Bucket="bkt")
        parts = TransferConfig(
            multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024
        )
        (tmp_path / "big").write_bytes(big)
        s3.upload_file(str(tmp_path / "big"), "bkt", "mlflow/model.bin", Config=parts)
        with ThreadPoolExecutor(8) as pool:  # writers in parallel, as dvc push does
            list(pool.map(lambda kv: s3.put_object(Bucket="bkt", Key=kv[0], Body=kv[1]),
                          small.items()))  # fmt: skip
        s3.put_object(Bucket="bkt", Key="gone", Body=b"x")
        s3.delete_object(Bucket="bkt", Key="gone")
    finally:
        kill(proc)
    with journal.open("ab") as out:  # a write torn by the kill: its client never heard back
        out.write(b'{"method":"PUT","path":"/b/torn","que')
    proc, url = serve(journal)
    try:
        s3 = client(url)
        assert s3.get_object(Bucket="bkt", Key="mlflow/model.bin")["Body"].read() == big
        for key, body in small.items():
            assert s3.get_object(Bucket="bkt", Key=key)["Body"].read() == body
        listed = {o["Key"] for o in s3.list_objects_v2(Bucket="bkt")["Contents"]}
        assert listed == {"mlflow/model.bin", *small}  # "gone" stayed deleted, "torn" absent
    finally:
        kill(proc)


def test_reads_are_not_journalled(tmp_path: Path) -> None:
    journal = tmp_path / "writes.jsonl"
    proc, url = serve(journal)
    try:
        s3 = client(url)
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="k", Body=b"v")
        size = journal.stat().st_size
        for _ in range(5):
            s3.get_object(Bucket="bkt", Key="k")
            s3.list_objects_v2(Bucket="bkt")
        with pytest.raises(s3.exceptions.NoSuchKey):
            s3.get_object(Bucket="bkt", Key="missing")
        assert journal.stat().st_size == size
        assert len(journal.read_bytes().splitlines()) == 2  # the bucket, the object
    finally:
        kill(proc)
