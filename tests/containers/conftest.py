"""Fixtures for the tests that run shardkv in Docker containers.

- ``docker_client``: the Docker engine, or a skip that says why there is none.
- ``shardkv_image``: the image tag, built by ``scripts/build-image.sh`` when it is missing or
  stale (the script reuses an image built from the same sources, so this is cheap after the
  first run; a first build takes one to three minutes and logs its progress), or the image
  named by ``SHARDKV_TEST_IMAGE``, tested as it is. The build runs once after collection,
  before the first test, so no test's timeout has to cover it.
- ``container_network``: a user-defined bridge network, where containers find each other by
  their network aliases (Docker's DNS), as pods do by their Service names.
- ``start_container``: starts a container of the image (optionally on that network) and removes
  it, with its anonymous volumes, at the end of the test; a failed test prints its logs.

The Ryuk reaper is disabled (its image cannot be pulled here): cleanup is these fixtures' job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from container_harness import REPO, RunningContainer, launch_container, remove_containers

# Before testcontainers reads its configuration.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

# SHARDKV_TEST_IMAGE names an image to test as it is (built elsewhere, or a release);
# without it the tests build, or reuse, shardkv:dev from this checkout.
GIVEN_IMAGE = os.environ.get("SHARDKV_TEST_IMAGE", "")
IMAGE = GIVEN_IMAGE or "shardkv:dev"
BUILD_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m "not containers"` leaves out what needs a Docker engine (the chart tests do not).
    for item in items:
        if "docker_client" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.containers)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Remember each phase's report so that fixtures can tell a failed test at teardown.
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    try:
        import docker
    except ImportError:
        pytest.skip("the docker Python package is not installed (pip install -e '.[test]')")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker daemon reachable ({type(exc).__name__}: {exc})")
    return client


def _build_image() -> str | None:
    """Run scripts/build-image.sh; None when it built (or reused) the image, else the reason
    with the end of its log."""
    log_path = REPO / "build" / "image-build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "wb") as log, subprocess.Popen(
        [str(REPO / "scripts" / "build-image.sh"), "--tag", IMAGE],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    ) as build:
        assert build.stdout is not None
        for line in build.stdout:
            log.write(line)
            # Progress lines of the scripts go to the terminal: a first build takes minutes.
            if line.startswith((b"[build-image", b"[build-base-image")):
                sys.__stderr__.write("  " + line.decode(errors="replace"))
                sys.__stderr__.flush()
            if time.monotonic() - started > BUILD_TIMEOUT_S:
                build.kill()
        status = build.wait()
    if status != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        return f"scripts/build-image.sh failed ({status}); log {log_path}:\n" + "\n".join(tail)
    return None


# The outcome of the build made before the first test (see pytest_collection_finish).
_prebuilt: dict[str, str | None] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the image once, after collection and before any test runs, when a collected test
    needs it: a first build takes minutes (more on a busy machine), which no single test's
    timeout should have to include."""
    if GIVEN_IMAGE or not any("shardkv_image" in getattr(item, "fixturenames", ())
                              for item in session.items):
        return
    try:
        import docker

        docker.from_env(timeout=30).ping()
    except Exception:
        return  # the docker_client fixture skips those tests and says why
    _prebuilt["failure"] = _build_image()


@pytest.fixture(scope="session")
def shardkv_image(docker_client: Any) -> str:
    """The shardkv image tag: built before the tests started (or here, if it was not), or
    the image named by SHARDKV_TEST_IMAGE, as it is."""
    if GIVEN_IMAGE:
        try:
            docker_client.images.get(GIVEN_IMAGE)
        except Exception as exc:
            pytest.fail(f"SHARDKV_TEST_IMAGE={GIVEN_IMAGE} is not a local image ({exc})")
        return GIVEN_IMAGE
    failure = _prebuilt["failure"] if "failure" in _prebuilt else _build_image()
    if failure is not None:
        pytest.fail(failure)
    docker_client.images.get(IMAGE)  # raises if the script claimed success without an image
    return IMAGE


@pytest.fixture
def container_network(docker_client: Any) -> Iterator[Any]:
    from testcontainers.core.network import Network

    network = Network().create()
    try:
        yield network
    finally:
        network.remove()


@pytest.fixture
def start_container(request: pytest.FixtureRequest, shardkv_image: str,
                    container_network: Any) -> Iterator[Callable[..., RunningContainer]]:
    """``start_container(command, ports=(7100,), env={}, network=None, aliases=(), **kwargs)``:
    start the shardkv image; extra keyword arguments go to the Docker API (read_only, tmpfs
    ``{path: "rw,size=16m"}``, volumes ``{host: {"bind", "mode"}}``, cap_drop, healthcheck, ...).
    Every container is removed after the test, before the network (this fixture depends on
    ``container_network`` so that pytest tears them down in that order)."""
    started: list[RunningContainer] = []

    def start(command: list[str], **options: Any) -> RunningContainer:
        return launch_container(shardkv_image, command, started, **options)

    yield start

    failed = any(getattr(getattr(request.node, f"report_{phase}", None), "failed", False)
                 for phase in ("setup", "call"))
    remove_containers(started, print_logs=failed)
