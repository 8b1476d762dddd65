"""Failpoints: named places in the node where a test can inject a fault.

The chaos harness needs to hit the windows that matter (the WAL written but not synced, an
entry durable on a replica but not acknowledged, an entry replicated but not committed on the
primary), and those windows are microseconds wide: a SIGKILL from outside lands in them by
luck only. A failpoint makes the window as wide as the test wants.

Arming is deliberately narrow: only the ``SHARDKV_FAILPOINTS`` environment variable (read
once, at import) or the test-only admin endpoint (mounted only when ``SHARDKV_TEST_ADMIN=1``)
can arm one, so a production node cannot be made to crash by a request. The spec is
``name=action[;name=action...]`` with actions:

- ``off``: disarmed;
- ``error``: raise ``FailpointError`` at the hook (the code path's own error handling runs);
- ``sleep(MS)``: delay the hook by MS milliseconds;
- ``pause``: block at the hook until the failpoint is disarmed or re-armed;
- ``crash``: ``os._exit(137)`` at once, as a SIGKILL would (no flush, no cleanup);
- ``N*action``: the action for the next N hits only, then off.

Cost when unarmed: call sites write ``if failpoints.ARMED: await failpoints.hit("name")``;
``ARMED`` is a plain dict that is empty unless something was armed, so the check is one
truth test of a global.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass, field

from aiohttp import web

logger = logging.getLogger(__name__)

ENV_SPEC = "SHARDKV_FAILPOINTS"
ENV_TEST_ADMIN = "SHARDKV_TEST_ADMIN"
CRASH_STATUS = 137

# The hooks the node calls. A name outside this set is refused when arming, so a typo in a
# test fails loudly instead of arming a failpoint nothing ever hits.
KNOWN = frozenset(
    {
        "wal_before_sync",  # the primary's WAL has written a group but not synced it
        "replica_before_ack",  # a replica made entries durable but has not acknowledged them
        "replica_before_apply",  # a replica received entries and has not appended them
        "primary_before_commit",  # an entry is durable locally, before waiting for a majority
        "primary_before_send",  # the primary is about to ship entries to a replica
        "primary_before_ack_client",  # the write concern is met, the answer not yet sent
        "snapshot_before_install",  # a replica received a snapshot, before installing it
        # a put passed the node's checks (ownership, a migration's fence) and has neither
        # read what it replaces nor been ordered (a SQLite read or the store lock, widened)
        "put_before_order",
        # the graceful stop, before its hooks run: a stop step that does not end
        # (node/stop_budget.py bounds it)
        "stop_before_hooks",
    }
)

_ACTION = re.compile(r"^(?:(\d+)\*)?(off|error|crash|pause|sleep\((\d+)\))$")


class FailpointError(Exception):
    """Raised at a hook armed with ``error``."""


@dataclass(slots=True)
class Action:
    kind: str  # error, crash, pause, sleep
    sleep_ms: int = 0
    remaining: int | None = None  # None: every hit
    released: asyncio.Event | None = field(default=None, repr=False)
    hits: int = 0


ARMED: dict[str, Action] = {}
HITS: dict[str, int] = {}
# Hooks blocked in a ``pause`` whose count ran out (``N*pause``): no longer armed, still
# released when the name is disarmed or re-armed.
_PAUSED: dict[str, list[Action]] = {}


def parse_action(spec: str) -> Action | None:
    """``"2*sleep(50)"`` -> Action; ``"off"`` -> None. Raises ValueError on anything else."""
    match = _ACTION.match(spec.strip())
    if match is None:
        raise ValueError(f"bad failpoint action {spec!r}: use off, error, crash, pause, "
                         "sleep(MS), optionally prefixed with N*")
    count, kind, sleep_ms = match.group(1), match.group(2), match.group(3)
    if kind == "off":
        return None
    if kind.startswith("sleep"):
        kind = "sleep"
    return Action(kind, int(sleep_ms or 0), None if count is None else int(count))


def arm(name: str, spec: str) -> None:
    """Arm (or, with ``off``, disarm) ``name``. A paused hook is released either way."""
    if name not in KNOWN:
        raise ValueError(f"unknown failpoint {name!r}; known: {sorted(KNOWN)}")
    action = parse_action(spec)
    previous = ARMED.pop(name, None)
    for paused in [*_PAUSED.pop(name, []), *([previous] if previous else [])]:
        if paused.released is not None:
            paused.released.set()
    if action is not None:
        ARMED[name] = action
    logger.warning("failpoint %s set to %s", name, spec)


def disarm_all() -> None:
    for name in {*ARMED, *_PAUSED}:
        arm(name, "off")


def load_spec(spec: str) -> None:
    """Arm everything in ``name=action;name=action`` (the environment variable's format)."""
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, sep, action = part.partition("=")
        if not sep:
            raise ValueError(f"bad failpoint spec {part!r}: expected name=action")
        arm(name.strip(), action)


async def hit(name: str) -> None:
    """The hook body: run ``name``'s action if it is armed. Call it behind ``if ARMED:``."""
    action = ARMED.get(name)
    if action is None:
        return
    HITS[name] = HITS.get(name, 0) + 1
    action.hits += 1
    if action.remaining is not None:
        action.remaining -= 1
        if action.remaining <= 0:
            ARMED.pop(name, None)
    logger.warning("failpoint %s hit: %s", name, action.kind)
    if action.kind == "crash":
        os._exit(CRASH_STATUS)
    if action.kind == "error":
        raise FailpointError(f"failpoint {name} armed with error")
    if action.kind == "sleep":
        await asyncio.sleep(action.sleep_ms / 1000)
    elif action.kind == "pause":
        if action.released is None:
            action.released = asyncio.Event()
        if ARMED.get(name) is not action:
            _PAUSED.setdefault(name, []).append(action)
        await action.released.wait()


def test_admin_enabled() -> bool:
    return os.environ.get(ENV_TEST_ADMIN) == "1"


async def _set_failpoint(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    spec = (await request.text()).strip() or "off"
    try:
        arm(name, spec)
    except ValueError as exc:
        return web.json_response(
            {"error": "INVALID_ARGUMENT", "message": str(exc), "retryable": False}, status=400
        )
    return web.json_response({"name": name, "action": spec, "hits": HITS.get(name, 0)})


async def _list_failpoints(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "armed": {name: a.kind for name, a in ARMED.items()},
            "hits": dict(HITS),
            "known": sorted(KNOWN),
        }
    )


def admin_routes() -> list[web.RouteDef]:
    """``PUT /admin/failpoints/{name}`` (body: the action) and ``GET /admin/failpoints``;
    empty unless ``SHARDKV_TEST_ADMIN=1``: the node mounts whatever this returns."""
    if not test_admin_enabled():
        return []
    return [
        web.get("/admin/failpoints", _list_failpoints),
        web.put("/admin/failpoints/{name}", _set_failpoint),
    ]


if os.environ.get(ENV_SPEC):
    load_spec(os.environ[ENV_SPEC])
