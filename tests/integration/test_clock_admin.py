"""The test-only clock endpoint and the clock nemesis against a real standalone node.

A node started with SHARDKV_TEST_ADMIN=1 lets a test skew its clock over ``/admin/clock``;
a TTL key read after the wall clock jumped past its expiry is gone, which shows the node
really reads that clock. The ClockNemesis drives the same endpoint.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from conftest import NodeFactory, NodeProcess
from shardkv.chaos.nemesis.clock_skew import ClockNemesis
from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.cluster.local_processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TEST_ADMIN = {"SHARDKV_TEST_ADMIN": "1"}


@pytest.fixture
def admin_node(node_factory: NodeFactory) -> NodeProcess:
    return node_factory(env=TEST_ADMIN)


async def clock_of(http: aiohttp.ClientSession, node: NodeProcess) -> dict[str, Any]:
    async with http.get(f"{node.url}/admin/clock") as r:
        assert r.status == 200
        return await r.json()


async def wait_for_log(node: NodeProcess, msg: str, within_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        entries = [e for e in node.log_entries() if e.get("msg") == msg]
        if entries:
            return entries[-1]
        assert time.monotonic() < deadline, f"no {msg!r} in the node's log"
        await asyncio.sleep(0.05)


async def test_skew_report_and_reset(admin_node: NodeProcess, http: aiohttp.ClientSession) -> None:
    url = f"{admin_node.url}/admin/clock"
    assert await clock_of(http, admin_node) == {
        "offset_ms": 0.0, "rate": 1.0, "wall_error_ms": 0.0, "monotonic_error_ms": 0.0,
        "skewed": False}
    async with http.put(url, json={"offset_ms": 5000}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["offset_ms"] == 5000 and body["rate"] == 1.0 and body["skewed"] is True
    assert body["wall_error_ms"] == pytest.approx(5000)
    logged = await wait_for_log(admin_node, "clock skewed")
    assert logged["offset_ms"] == 5000 and logged["after"]["offset_ms"] == 5000
    assert logged["level"] == "warning"

    async with http.put(url, json={"rate": 1.5}) as r:  # the offset stays as it was
        assert r.status == 200
    reading = await clock_of(http, admin_node)
    assert reading["offset_ms"] == 5000 and reading["rate"] == 1.5

    async with http.delete(url) as r:
        assert r.status == 200
        body = await r.json()
    assert body["offset_ms"] == 0 and body["rate"] == 1.0 and body["wall_error_ms"] == 0
    assert body["skewed"] is False
    assert body["monotonic_error_ms"] >= 0  # it ran fast for a while, and never goes back
    assert (await wait_for_log(admin_node, "clock reset to real time"))["after"]["rate"] == 1.0


async def test_bad_bodies_are_refused_and_leave_the_clock_alone(
    admin_node: NodeProcess, http: aiohttp.ClientSession,
) -> None:
    url = f"{admin_node.url}/admin/clock"
    async with http.put(url, json={"offset_ms": 1234, "rate": 1.01}) as r:
        assert r.status == 200
    before = await clock_of(http, admin_node)
    bad_bodies: list[Any] = [{"rate": 0}, {"rate": -1}, {"rate": "fast"}, {"offset_ms": "x"},
                             {"rate": None}, {"offset": 5}, {}, [1, 2], "text"]
    for bad in bad_bodies:
        async with http.put(url, json=bad) as r:
            assert r.status == 400, bad
            body = await r.json()
        assert body["error"] == "INVALID_ARGUMENT" and body["retryable"] is False, bad
        assert body["message"], bad
    for raw in (b"{not json", b'{"rate": NaN}', b'{"offset_ms": Infinity}'):
        async with http.put(url, data=raw, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400, raw
            assert (await r.json())["error"] == "INVALID_ARGUMENT"
    after = await clock_of(http, admin_node)
    assert (after["offset_ms"], after["rate"]) == (before["offset_ms"], before["rate"]) \
        == (1234, 1.01)


async def test_without_test_admin_there_is_no_clock_endpoint(
    node: NodeProcess, http: aiohttp.ClientSession,
) -> None:
    for method in ("GET", "PUT", "DELETE"):
        async with http.request(method, f"{node.url}/admin/clock",
                                json={"offset_ms": 1} if method == "PUT" else None) as r:
            assert r.status == 404, method
            assert (await r.json())["error"] == "NOT_FOUND"
    with pytest.raises(NemesisError, match="SHARDKV_TEST_ADMIN=1"):
        await ClockNemesis(url_of=lambda _: node.url).start(["n1"], mode="bump")


async def test_a_ttl_key_expires_early_when_the_wall_clock_jumps_past_it(
    admin_node: NodeProcess, http: aiohttp.ClientSession,
) -> None:
    kv = f"{admin_node.url}/v1/kv"
    async with http.put(f"{kv}/short", params={"ttl": "60"}, data=b"v") as r:
        assert r.status == 200
    async with http.put(f"{kv}/forever", data=b"v") as r:
        assert r.status == 200
    async with http.get(f"{kv}/short") as r:
        assert r.status == 200
        expires_at = float(r.headers["X-Expires-At"])
    assert expires_at == pytest.approx(time.time() + 60, abs=30)

    async with http.put(f"{admin_node.url}/admin/clock", json={"offset_ms": 61_000}) as r:
        assert r.status == 200
    try:
        async with http.get(f"{kv}/short") as r:
            assert r.status == 404  # expired on the node's clock, a minute early in real time
        async with http.get(f"{kv}/forever") as r:
            assert r.status == 200
        # Writes take their expiry from the same clock.
        async with http.put(f"{kv}/later", params={"ttl": "60"}, data=b"v") as r:
            assert r.status == 200
        async with http.get(f"{kv}/later") as r:
            assert float(r.headers["X-Expires-At"]) == pytest.approx(expires_at + 61, abs=30)
    finally:
        async with http.delete(f"{admin_node.url}/admin/clock") as r:
            assert r.status == 200


async def test_clock_nemesis_start_stop_heal_all(
    admin_node: NodeProcess, http: aiohttp.ClientSession,
) -> None:
    nemesis = ClockNemesis(url_of=lambda _: admin_node.url, seed=7)

    detail = await nemesis.start(["n1"], mode="bump", offset_ms=-90_000)
    assert detail == {"clock_mode": "bump", "skews": {"n1": {"offset_ms": -90_000.0}},
                      "skewed": ["n1"]}
    assert (await clock_of(http, admin_node))["offset_ms"] == -90_000
    assert await nemesis.stop() == {"outcome": {"n1": "reset"}}
    assert (await clock_of(http, admin_node))["skewed"] is False

    detail = await nemesis.start(["n1"], mode="drift")
    rate = detail["skews"]["n1"]["rate"]
    assert 0.97 <= rate <= 1.03 and rate != 1.0
    assert (await clock_of(http, admin_node))["rate"] == rate
    await nemesis.heal_all()  # without a stop
    assert (await clock_of(http, admin_node))["rate"] == 1.0
    await nemesis.heal_all()  # any number of times

    # A seeded nemesis draws the same skews again.
    first = await ClockNemesis(url_of=lambda _: admin_node.url, seed=11).start(["n1"])
    again = ClockNemesis(url_of=lambda _: admin_node.url, seed=11)
    assert await again.start(["n1"]) == first
    await again.heal_all()


async def test_clock_nemesis_strobe_flips_until_stopped(
    admin_node: NodeProcess, http: aiohttp.ClientSession,
) -> None:
    nemesis = ClockNemesis(url_of=lambda _: admin_node.url)
    detail = await nemesis.start(["n1"], mode="strobe", offset_ms=5000, period_ms=50)
    assert detail["period_ms"] == 50
    seen: set[float] = set()
    deadline = time.monotonic() + 20
    while seen != {0.0, 5000.0}:
        assert time.monotonic() < deadline, f"the strobe never flipped: saw {seen}"
        seen.add((await clock_of(http, admin_node))["offset_ms"])
        await asyncio.sleep(0.01)
    stopped = await nemesis.stop()
    assert stopped["outcome"] == {"n1": "reset"} and stopped["strobe_flips"] >= 1
    # stop waited for the strobe's last request, so nothing lands after the reset
    assert (await clock_of(http, admin_node))["skewed"] is False


async def test_heal_all_ignores_a_dead_node(admin_node: NodeProcess,
                                           http: aiohttp.ClientSession) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    urls = {"n1": admin_node.url, "gone": nowhere}
    nemesis = ClockNemesis(url_of=urls.__getitem__, seed=3)
    await nemesis.start(["n1"], mode="bump", offset_ms=10_000)
    with pytest.raises(NemesisError, match="no answer"):
        await nemesis.start(["gone"], mode="bump")
    admin_node.kill()
    await nemesis.heal_all()  # neither node answers: no error
    await asyncio.to_thread(admin_node.start)
    # The skew lived in the dead process's memory: the restarted node runs on real time.
    assert (await clock_of(http, admin_node))["skewed"] is False
