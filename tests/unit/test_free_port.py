"""free_port draws listening ports below the kernel's ephemeral range, where no outgoing
connection can take one between the choice and the server's bind (a coordinator whose Raft
port was taken so stayed out of its group in a CI run)."""

from __future__ import annotations

import socket

import pytest
from shardkv.cluster.local_processes import LISTEN_PORTS_FLOOR, _ephemeral_floor, free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    floor = _ephemeral_floor()
    if floor is None or floor <= LISTEN_PORTS_FLOOR + 1000:
        pytest.skip("no ephemeral port range to stay below on this system")
    taken: set[int] = set()
    ports = [free_port(taken=taken) for _ in range(50)]
    assert len(set(ports)) == 50 and taken == set(ports)
    assert all(LISTEN_PORTS_FLOOR <= p < floor for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        used = busy.getsockname()[1]
        # Force the draw onto the busy port first, then onto any other.
        draws = iter([used, used + 1 if used + 1 < 65536 else used - 1])
        monkeypatch.setattr("shardkv.cluster.local_processes.random.choice",
                            lambda pool: next(draws))
        monkeypatch.setattr("shardkv.cluster.local_processes._ephemeral_floor",
                            lambda: 65000)
        assert free_port() != used
