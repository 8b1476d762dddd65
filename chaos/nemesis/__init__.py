"""Nemeses: the faults a chaos run injects, each with ``start``, ``stop`` and ``heal_all``.

Jepsen's names: ``kill`` and ``pause`` (:mod:`.process`), ``partition`` (:mod:`.loopback_partition`
between local processes, :mod:`.netns` for processes in namespaces, :mod:`.delay_proxy` as the
fallback on a proxied link, all driven by the grudges of :mod:`.partitions`), ``packet`` loss
(:mod:`.loopback_partition`, :mod:`.packet_loss`) and delay (:mod:`.delay_proxy`), ``file``
damage of a stopped node's WAL (:mod:`.wal_damage`, and :mod:`.damaged_restart` for the whole
crash-damage-restart cycle), node ``failpoint``\\ s (:mod:`.failpoint`), faults aimed at roles
(:mod:`.by_role`), and the seeded :mod:`.schedule` that mixes them so a failing run replays.
"""

from shardkv.chaos.nemesis.fault import Nemesis, NemesisError

__all__ = ["Nemesis", "NemesisError"]
