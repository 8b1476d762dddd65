"""Ownership after resharding: no key readable from two shards, and the holder is the owner.

An online migration copies keys to a new shard, flips the ring, then has each source delete
what it no longer owns (docs/resharding.md). Two bugs would not show in the history alone: a
source that never cleans (a key readable from two shards: after a later ring change or an
abort, the stale copy can come back as the answer) and a flip that lost keys on the way
(the lost-writes checker sees that one through the client). This checker reads what each
shard's primary *holds*, not what it serves (``chaos/ownership_probe.py`` scans the stopped
primaries' stores, since a node answers ``STALE_MAP`` for a key it does not own, whether or
not it still holds a copy), and for every key the workloads touched:

- held by two shards or more: ``two-owners``;
- held only by a shard the final ring does not give it to: ``wrong-owner``;
- held by no shard: nothing here (lost-writes judges absence against the acknowledged
  writes, through the client).

It needs the migrations to be finished: while the final map still shows one ``copying``,
``flipping`` or ``cleaning``, two copies are legal, and the checker answers ``unknown``. A
shard whose primary could not be scanned makes its keys ``unknown`` too. The stats count the
migrations the run's ``reshard-*`` windows recorded, by final state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shardkv.chaos.checkers.result import CheckResult
from shardkv.chaos.history import NemesisEvent

MIGRATION_FINISHED = ("done", "failed", "aborted")


def migrations_by_state(events: Iterable[NemesisEvent]) -> dict[str, int]:
    """Final states of the migrations the reshard windows started (``refused`` and
    ``skipped`` windows counted too: they are the coordinator's answer or the cap)."""
    states: Counter[str] = Counter()
    for event in events:
        if not event.fault.startswith("reshard-"):
            continue
        if event.action == "start":
            if "refused" in event.detail:
                states["refused"] += 1
            elif "skipped" in event.detail:
                states["skipped"] += 1
        elif event.action == "stop" and event.detail.get("migration"):
            states[str(event.detail.get("state"))] += 1
    return dict(sorted(states.items()))


def check_ownership(
    keys: Iterable[str],
    holdings: Mapping[str, set[str] | None],
    owner_of: Callable[[str], str],
    *,
    migration_state: str | None = None,
    events: Iterable[NemesisEvent] = (),
) -> CheckResult:
    """``holdings``: per shard of the final map, the keys its primary holds (None: could not
    be scanned); ``owner_of``: the final ring's owner of a key; ``migration_state``: the
    state of a migration still in the final map (None when there is none)."""
    result = CheckResult("ownership")
    keys = sorted(set(keys))
    result.stats["keys"] = len(keys)
    result.stats["shards"] = len(holdings)
    result.stats["migrations"] = migrations_by_state(events)
    if migration_state is not None and migration_state not in MIGRATION_FINISHED:
        result.unknown("migration-running", None, f"a migration is still {migration_state} "
                       "in the final map: two copies are legal until cleaning is done")
        return result
    unscanned = sorted(shard for shard, held in holdings.items() if held is None)
    for shard in unscanned:
        result.unknown("unscanned", shard, f"shard {shard}'s primary could not be scanned")
    moved = 0
    for key in keys:
        holders = sorted(shard for shard, held in holdings.items() if held and key in held)
        owner = owner_of(key)
        if len(holders) > 1:
            result.anomaly("two-owners", key, f"{key} is held by shards {', '.join(holders)} "
                           f"(ring owner {owner})", holders=holders, owner=owner)
        elif holders and holders[0] != owner:
            result.anomaly("wrong-owner", key, f"{key} is held by shard {holders[0]} only; "
                           f"the ring gives it to {owner}", holders=holders, owner=owner)
        moved += bool(holders)
    result.stats["keys_held"] = moved
    return result


def summary_of(result: CheckResult) -> dict[str, Any]:
    """The figures a run table needs: migrations done and anomalies found."""
    migrations = result.stats.get("migrations") or {}
    return {"migrations_done": int(migrations.get("done", 0)),
            "anomalies": len(result.anomalies)}
