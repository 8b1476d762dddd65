"""The ``clock`` nemesis: skew the clocks of nodes, through their test-only clock endpoint.

A node reads every time it measures (lease, heartbeat send times, replica staleness,
replication timestamps, TTL expiry) from its own ``NodeClock`` (node/clock.py), which a node
started with ``SHARDKV_TEST_ADMIN=1`` lets a test skew over ``PUT /admin/clock``. Modes:

- ``bump``: the wall clock jumps by ``offset_ms`` (negative: back), like an NTP step. The
  lease only measures durations, so it must not care; TTLs expire early (forward) or late
  (back) on that node; a replica behind its primary looks fresher than it is by up to the
  offset, one ahead looks staler;
- ``drift``: both clocks run at ``rate`` times real time, like a drifting crystal. The
  default rates stay within 3 % of real time, inside the 5 % the lease argument assumes
  (node/replication/lease.py, docs/replication.md): the run must stay correct. An explicit ``rate``
  beyond that is accepted, and is a fault the lease is *not* built to survive;
- ``strobe``: the wall clock flips between ``offset_ms`` and real time every ``period_ms``
  until ``stop`` (a clock that keeps being stepped back and forth).

What is not given in the params is drawn from a ``random.Random``: the constructor's
(``seed``), or ``random.Random(params["seed"])`` for one start, so a seeded schedule replays
the same skews. Each target gets its own draw, so two skewed nodes also disagree with each
other.

``stop`` resets the last start's targets; ``heal_all`` every node ever skewed. A node that
does not answer is left out quietly (it may be dead, and a restarted node's clock is real
again: the skew lives in its memory), but stays on the list, so a later ``heal_all`` tries
it again. A node without the endpoint (404) cannot be skewed: ``start`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.cluster.cluster_token import auth_headers

log = logging.getLogger(__name__)

MODES = ("bump", "drift", "strobe")
PATH = "/admin/clock"
BUMP_MS = (10.0, 30_000.0)  # magnitude of a drawn offset, log-uniform
DRIFT = (0.005, 0.03)  # distance of a drawn rate from 1, uniform
STROBE_PERIOD_MS = (50.0, 500.0)


def http_json_request(method: str, url: str, body: dict[str, Any] | None = None,
                      timeout: float = 2.0) -> tuple[int, Any]:
    """(status, decoded JSON body or its text); 0 when nothing answered. Blocking: call in a
    thread."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json", **auth_headers()})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, _decoded(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decoded(exc.read())
    except OSError as exc:
        return 0, str(exc)


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode("utf-8", "replace")


def drawn_offset_ms(rng: random.Random) -> float:
    """A step of 10 ms to 30 s, either way (log-uniform: small and large steps alike)."""
    low, high = (math.log10(v) for v in BUMP_MS)
    return rng.choice((-1.0, 1.0)) * round(10 ** rng.uniform(low, high), 1)


def drawn_rate(rng: random.Random) -> float:
    """0.5 % to 3 % fast or slow."""
    return round(1.0 + rng.choice((-1.0, 1.0)) * rng.uniform(*DRIFT), 4)


def _number(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise NemesisError(f"clock nemesis: {name} must be a finite number, got {value!r}")
    return float(value)


class ClockNemesis:
    """``start(targets, mode="bump"|"drift"|"strobe", offset_ms=?, rate=?, period_ms=?,
    seed=?)``; see the module docstring."""

    def __init__(self, *, url_of: Callable[[str], str], seed: int | None = None,
                 name: str = "clock", timeout_s: float = 2.0) -> None:
        self.name = name
        self._url_of = url_of
        self._rng = random.Random(seed)
        self._timeout_s = timeout_s
        self._current: list[str] = []
        self._ever: set[str] = set()
        self._strobe: asyncio.Task[None] | None = None
        self._strobe_stopping = asyncio.Event()
        self._strobe_flips = 0

    async def _request(self, method: str, target: str,
                       body: dict[str, Any] | None = None) -> tuple[int, Any]:
        url = f"{self._url_of(target)}{PATH}"
        return await asyncio.to_thread(http_json_request, method, url, body, self._timeout_s)

    # ------------------------------------------------------------------------------ start

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        rng = random.Random(params["seed"]) if params.get("seed") is not None else self._rng
        mode = params.get("mode") or rng.choice(MODES)
        if mode not in MODES:
            raise NemesisError(f"clock nemesis: unknown mode {mode!r}; modes: {list(MODES)}")
        offset_ms, rate = _number(params, "offset_ms"), _number(params, "rate")
        if rate is not None and rate <= 0:
            raise NemesisError(f"clock nemesis: rate must be > 0, got {rate}")
        await self._stop_strobe()
        skews: dict[str, dict[str, float]] = {}
        for target in targets:
            if mode == "drift":
                skews[target] = {"rate": rate if rate is not None else drawn_rate(rng)}
            else:
                skews[target] = {"offset_ms": offset_ms if offset_ms is not None
                                 else drawn_offset_ms(rng)}
        detail: dict[str, Any] = {"clock_mode": mode, "skews": skews}
        if mode == "strobe":
            period = _number(params, "period_ms")
            period_ms = period if period is not None else round(rng.uniform(*STROBE_PERIOD_MS))
            if period_ms <= 0:
                raise NemesisError(f"clock nemesis: period_ms must be > 0, got {period_ms}")
            detail["period_ms"] = period_ms
        self._current = []
        for target, skew in skews.items():
            self._ever.add(target)  # before the request: it may land even if the answer fails
            self._current.append(target)
            await self._skew(target, skew)
        if mode == "strobe":
            self._strobe_flips = 0
            self._strobe_stopping = asyncio.Event()
            self._strobe = asyncio.create_task(
                self._flip_until_stopped(skews, detail["period_ms"] / 1000,
                                         self._strobe_stopping), name="clock-strobe")
        return {**detail, "skewed": list(self._current)}

    async def _skew(self, target: str, skew: dict[str, float]) -> None:
        status, body = await self._request("PUT", target, skew)
        if status == 404:
            raise NemesisError(f"{target} has no clock admin endpoint (start it with "
                               "SHARDKV_TEST_ADMIN=1)")
        if status == 0:
            raise NemesisError(f"skewing the clock of {target}: no answer ({body})")
        if status != 200:
            raise NemesisError(f"skewing the clock of {target} with {skew}: {status} {body}")

    async def _flip_until_stopped(self, skews: dict[str, dict[str, float]], period_s: float,
                                  stopping: asyncio.Event) -> None:
        """Real time and the offset in turn; a node that does not answer is skipped (the
        strobe must outlive a node killed meanwhile). Stopped by ``stopping``, never
        cancelled: a request cancelled in its thread could still land after the reset."""
        at_offset = True
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), period_s)
            if stopping.is_set():
                return
            at_offset = not at_offset
            for target, skew in skews.items():
                body = skew if at_offset else {"offset_ms": 0.0}
                status, answer = await self._request("PUT", target, body)
                if status != 200:
                    log.debug("clock strobe: %s answered %s %s", target, status, answer)
            self._strobe_flips += 1

    async def _stop_strobe(self) -> None:
        task, self._strobe = self._strobe, None
        if task is not None:
            self._strobe_stopping.set()
            with contextlib.suppress(Exception):
                await task  # a strobe that died of an error has nothing left to undo

    # ------------------------------------------------------------------------------- heal

    async def _reset(self, target: str) -> str:
        status, body = await self._request("DELETE", target)
        if status == 200:
            self._ever.discard(target)
            return "reset"
        if status == 404:
            self._ever.discard(target)  # no endpoint (restarted without it): nothing skewed
            return "no clock endpoint"
        if status == 0:
            return "no answer"
        raise NemesisError(f"resetting the clock of {target}: {status} {body}")

    async def stop(self) -> dict[str, Any]:
        flips = self._strobe_flips if self._strobe is not None else None
        await self._stop_strobe()
        current, self._current = self._current, []
        outcome = {target: await self._reset(target) for target in current}
        detail: dict[str, Any] = {"outcome": outcome}
        if flips is not None:
            detail["strobe_flips"] = flips
        return detail

    async def heal_all(self) -> None:
        """Reset every node ever skewed; never raises for a node that is dead or refuses."""
        await self._stop_strobe()
        self._current = []
        for target in sorted(self._ever):
            try:
                outcome = await self._reset(target)
            except Exception as exc:
                log.warning("clock nemesis: could not reset %s: %s", target, exc)
                continue
            if outcome == "no answer":
                log.info("clock nemesis: %s did not answer the reset (dead?)", target)
