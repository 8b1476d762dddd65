"""Nemeses: the faults a chaos run injects, each with ``start``, ``stop`` and ``heal_all``.

Jepsen's names: ``kill`` and ``pause`` (:mod:`.process`), ``partition`` (:mod:`.netns`, with
:mod:`.delay_proxy` as the fallback where namespaces are unavailable, both driven by the
grudges of :mod:`.partitions`), ``packet`` loss (:mod:`.packet_loss`) and delay
(:mod:`.delay_proxy`), ``file`` damage of a stopped node's WAL (:mod:`.wal_damage`), and the
seeded :mod:`.schedule` that mixes them so a failing run replays exactly.
"""

from shardkv.chaos.nemesis.fault import Nemesis, NemesisError

__all__ = ["Nemesis", "NemesisError"]
