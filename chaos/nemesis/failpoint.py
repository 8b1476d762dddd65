"""The ``failpoint`` nemesis: arm one of the node's named failpoints on the targets.

A SIGKILL from outside lands in a microsecond-wide window (the WAL written but not synced,
a write durable on a majority but not yet answered) by luck only; the node's failpoints
(node/testing/failpoints.py)
make such a window as wide as the run wants: ``crash`` exits at the hook
as a SIGKILL would, ``sleep(MS)`` and ``pause`` stretch it, ``error`` fails the code path,
``N*action`` limits it to the next N hits. They are armed over ``PUT /admin/failpoints/NAME``,
which a node serves only when started with ``SHARDKV_TEST_ADMIN=1`` (the runner sets it for
the cluster it starts when a scenario uses failpoints).

``stop`` disarms, and restarts (same data) every target that crashed at its failpoint;
``heal_all`` does the same for every target ever armed.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shardkv.chaos.nemesis.fault import NemesisError
from shardkv.cluster.cluster_token import auth_headers

# How long a target that no longer answers may take to finish exiting before it is restarted.
CRASH_EXIT_WAIT_S = 60.0


def http_put_text(url: str, body: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body); 0 when nothing answered. Blocking: call in a thread."""
    request = urllib.request.Request(url, data=body.encode(), method="PUT",
                                     headers={"Content-Type": "text/plain", **auth_headers()})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except OSError as exc:
        return 0, str(exc)


class FailpointNemesis:
    """``start(targets, failpoint="primary_before_ack_client", action="1*crash")``."""

    def __init__(
        self,
        *,
        url_of: Callable[[str], str],
        exited: Callable[[str], int | None],
        restart: Callable[[str], Awaitable[Any]],
        name: str = "failpoint",
    ) -> None:
        self.name = name
        self._url_of = url_of
        self._exited = exited
        self._restart = restart
        self._armed: dict[str, str] = {}  # target -> failpoint, for the current window
        self._ever: dict[str, set[str]] = {}

    async def _put(self, target: str, failpoint: str, action: str) -> tuple[int, str]:
        url = f"{self._url_of(target)}/admin/failpoints/{failpoint}"
        return await asyncio.to_thread(http_put_text, url, action)

    async def start(self, targets: Sequence[str], **params: Any) -> dict[str, Any]:
        failpoint = str(params.get("failpoint", ""))
        action = str(params.get("action", "1*crash"))
        if not failpoint:
            raise NemesisError("failpoint nemesis needs params failpoint= and action=")
        armed = []
        for target in targets:
            status, body = await self._put(target, failpoint, action)
            if status == 404:
                raise NemesisError(f"{target} has no failpoint admin endpoint (start it with "
                                   "SHARDKV_TEST_ADMIN=1)")
            if status != 200:
                raise NemesisError(f"arming {failpoint}={action} on {target}: {status} {body}")
            self._armed[target] = failpoint
            self._ever.setdefault(target, set()).add(failpoint)
            armed.append(target)
        return {"failpoint": failpoint, "failpoint_action": action, "armed": armed}

    async def _undo(self, target: str, failpoints: set[str]) -> str:
        if await asyncio.to_thread(self._exited, target) is not None:
            await self._restart(target)
            return "restarted"
        unreachable = False
        for failpoint in sorted(failpoints):
            status, body = await self._put(target, failpoint, "off")
            if status == 0:
                unreachable = True
            elif status != 200:
                raise NemesisError(f"disarming {failpoint} on {target}: {status} {body}")
        if unreachable and await self._exits_within(target, CRASH_EXIT_WAIT_S):
            # It crashed at the failpoint but was still exiting when first asked (a thread
            # finishing an fdatasync on a busy disk keeps a dead process unreapable): read
            # as "running", it used to stay down for the rest of the run.
            await self._restart(target)
            return "restarted"
        return "unreachable" if unreachable else "disarmed"

    async def _exits_within(self, target: str, timeout_s: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if await asyncio.to_thread(self._exited, target) is not None:
                return True
            await asyncio.sleep(0.2)
        return False

    async def stop(self) -> dict[str, Any]:
        armed, self._armed = self._armed, {}
        outcome = {t: await self._undo(t, {fp}) for t, fp in sorted(armed.items())}
        return {"outcome": outcome}

    async def heal_all(self) -> None:
        self._armed = {}
        for target, failpoints in sorted(self._ever.items()):
            await self._undo(target, failpoints)
        self._ever.clear()
