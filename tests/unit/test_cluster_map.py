"""The map model: the JSON shape of DESIGN.md and lossless round trips."""

from __future__ import annotations

import json

import pytest
from shardkv.cluster.cluster_map import (
    ClusterMap,
    CoordinatorInfo,
    NodeInfo,
    RingSpec,
    ShardInfo,
)


def sample() -> ClusterMap:
    return ClusterMap(
        version=12,
        leader="c1",
        replication_factor=3,
        ring=RingSpec(version=3, hash="md5", vnodes=160, shards={"s1": 1, "s2": 2}),
        shards={
            "s1": ShardInfo(epoch=4, primary="n1", members=["n1", "n2", "n3"]),
            "s2": ShardInfo(epoch=1, primary=None, members=[]),
        },
        nodes={
            "n1": NodeInfo(url="http://127.0.0.1:7101", shard="s1", role="primary",
                           labels={"zone": "a"}),
            "n2": NodeInfo(url="http://127.0.0.1:7102", shard="s1", role="replica"),
            "n3": NodeInfo(url="http://127.0.0.1:7103", status="draining"),
        },
        coordinators={"c1": CoordinatorInfo(url="http://127.0.0.1:7000", raft="127.0.0.1:7100")},
    )


def test_json_shape_matches_the_design_contract() -> None:
    body = json.loads(sample().to_json())
    assert body["version"] == 12 and body["leader"] == "c1"
    assert body["ring"] == {"version": 3, "hash": "md5", "vnodes": 160,
                            "shards": {"s1": {"weight": 1}, "s2": {"weight": 2}}}
    assert body["shards"]["s1"] == {"epoch": 4, "primary": "n1",
                                    "members": ["n1", "n2", "n3"], "state": "active"}
    assert body["nodes"]["n1"] == {"url": "http://127.0.0.1:7101", "status": "up",
                                   "shard": "s1", "role": "primary", "labels": {"zone": "a"}}


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_round_trip_is_lossless(codec: str) -> None:
    m = sample()
    if codec == "json":
        again = ClusterMap.from_json(m.to_json())
    else:
        again = ClusterMap.from_msgpack(m.to_msgpack())
    assert again == m
    assert again.primary_of("s1") == m.nodes["n1"]
    assert again.primary_of("s2") is None
    assert again.coordinator_url("c1") == "http://127.0.0.1:7000"


def test_readers_tolerate_extra_fields_and_missing_optionals() -> None:
    body = json.loads(sample().to_json())
    body["future_field"] = {"x": 1}
    body["nodes"]["n1"]["new_thing"] = True
    del body["coordinators"]
    m = ClusterMap.from_dict(body)
    assert m.nodes["n1"].role == "primary" and m.coordinators == {}


def test_copy_is_deep() -> None:
    m = sample()
    c = m.copy()
    c.shards["s1"].members.append("n9")
    assert "n9" not in m.shards["s1"].members


def test_non_object_is_rejected() -> None:
    with pytest.raises(ValueError):
        ClusterMap.from_dict([1, 2])  # type: ignore[arg-type]
