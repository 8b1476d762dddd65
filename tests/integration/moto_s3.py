"""An S3 endpoint for the backup tests: moto in server mode, a real S3 HTTP API on a local
port, started by the test (``moto[server]`` is in the test extras).

``moto_s3`` (module scope) starts it, points the AWS environment at it (dummy credentials,
``AWS_ENDPOINT_URL``) for the test and the processes it starts, and yields its URL; it skips
with a reason when moto is not installed or does not answer.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from shardkv.cluster.local_processes import free_port, spawn_logged, stop_children

START_TIMEOUT_S = 30.0


@pytest.fixture(scope="module", name="moto_s3")
def moto_s3_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto is not installed (pip install 'moto[server]'; the test extras do)")
    port = free_port()
    log: Path = tmp_path_factory.mktemp("moto") / "moto.log"
    proc: subprocess.Popen[bytes] = spawn_logged(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_children([proc])
                pytest.skip(f"moto's S3 server did not start: {log.read_text()[-500:]}")
            time.sleep(0.1)
    saved = dict(os.environ)
    os.environ.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url})
    try:
        yield url
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stop_children([proc])


def make_bucket(name: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
