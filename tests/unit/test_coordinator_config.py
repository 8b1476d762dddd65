"""Coordinator configuration: flags and environment, validated with clear messages."""

from __future__ import annotations

import argparse

import pytest
from shardkv.coordinator.cli import add_arguments, config_from_args
from shardkv.coordinator.config import ConfigError, CoordinatorConfig, RaftTimings, parse_peers


def parse(argv: list[str]) -> CoordinatorConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(argv))
    config.validate()
    return config


BASE = ["--id", "c1", "--listen", "127.0.0.1:7000", "--raft", "127.0.0.1:7100",
        "--data-dir", "/tmp/x"]


def test_a_three_member_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDKV_RAFT_PASSWORD", "pw")
    monkeypatch.setenv("SHARDKV_ADMIN_TOKEN", "tok")
    monkeypatch.setenv("SHARDKV_RAFT_ELECTION_MIN_S", "0.2")
    monkeypatch.setenv("SHARDKV_RAFT_ELECTION_MAX_S", "0.5")
    config = parse([*BASE, "--peers", "c2=127.0.0.1:7101,c3=127.0.0.1:7102",
                    "--init-shards", "4", "--replication-factor", "3"])
    assert config.peers == {"c2": "127.0.0.1:7101", "c3": "127.0.0.1:7102"}
    assert config.raft_password == "pw" and config.admin_token == "tok"
    assert config.url == "http://127.0.0.1:7000" and config.group_size == 3
    assert (config.timings.election_min, config.timings.election_max) == (0.2, 0.5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--peers", "c2=127.0.0.1:7101"], "1, 3 or 5"),
        (["--peers", "c2"], "ID=HOST:PORT"),
        (["--peers", "c2=127.0.0.1:x"], "HOST:PORT"),
        (["--peers", "c1=127.0.0.1:7101,c2=127.0.0.1:7102"], "must not name this"),
        (["--peers", "c2=127.0.0.1:7100,c3=127.0.0.1:7102"], "repeats"),
        (["--init-shards", "0"], "--init-shards"),
        (["--replication-factor", "9"], "--replication-factor"),
    ],
)
def test_bad_flags_are_refused_with_the_reason(extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse([*BASE, *extra])


def test_joining_member_may_start_with_an_even_view() -> None:
    assert parse([*BASE, "--peers", "c2=127.0.0.1:7101", "--join"]).join


def test_raft_on_a_routable_address_needs_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHARDKV_RAFT_PASSWORD", raising=False)
    argv = ["--id", "c1", "--raft", "10.0.0.5:7100", "--data-dir", "/tmp/x",
            "--peers", "c2=10.0.0.6:7100,c3=10.0.0.7:7100"]
    with pytest.raises(ConfigError, match="SHARDKV_RAFT_PASSWORD"):
        parse(argv)
    with pytest.raises(ConfigError, match="wildcard"):
        parse(["--id", "c1", "--raft", "0.0.0.0:7100", "--data-dir", "/tmp/x"])


def test_missing_required_flags_and_bad_timings() -> None:
    with pytest.raises(ConfigError, match="--raft"):
        parse(["--id", "c1", "--data-dir", "/tmp/x"])
    with pytest.raises(ConfigError, match="heartbeat"):
        RaftTimings(election_min=0.5, election_max=0.4).validate()
    assert parse_peers("") == {}


def test_a_lone_coordinator_on_a_routable_raft_address_needs_a_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A group of one unpickles network input as much as a group of three."""
    monkeypatch.delenv("SHARDKV_RAFT_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="unpickle"):
        parse(["--id", "c1", "--raft", "10.0.0.5:7100", "--data-dir", "/tmp/x"])
    monkeypatch.setenv("SHARDKV_RAFT_PASSWORD", "p" * 20)
    assert parse(["--id", "c1", "--raft", "10.0.0.5:7100", "--data-dir", "/tmp/x"]).raft_password


def test_a_routable_listen_address_needs_the_cluster_credential(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SHARDKV_CLUSTER_TOKEN", "SHARDKV_CLUSTER_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    argv = ["--id", "c1", "--listen", "10.0.0.5:7000", "--raft", "127.0.0.1:7100",
            "--data-dir", "/tmp/x"]
    with pytest.raises(ConfigError, match="cluster credential"):
        parse(argv)
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", "short")
    with pytest.raises(ConfigError, match="too short"):
        parse(argv)
    monkeypatch.setenv("SHARDKV_CLUSTER_TOKEN", "t" * 32)
    assert parse(argv).cluster_token == "t" * 32
