"""The shared config model (cluster/settings.py) and the timing contract (cluster/timing.py):
one error type, one file format for every process, the timing validated once."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from shardkv.cluster.settings import ConfigError
from shardkv.cluster.timing import TimingContract, lease_for
from shardkv.coordinator import config as coordinator_config
from shardkv.coordinator.cli import add_arguments, config_from_args
from shardkv.node import config as node_config
from shardkv.node.config import load_config

COORDINATOR_FLAGS = ["--id", "c1", "--raft", "127.0.0.1:7100", "--data-dir", "/tmp/x"]


def coordinator(argv: list[str], environ: dict[str, str]) -> coordinator_config.CoordinatorConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv), environ)


def test_one_error_type_for_every_process() -> None:
    assert node_config.ConfigError is ConfigError
    assert coordinator_config.ConfigError is ConfigError


def test_one_file_configures_both_processes_and_shares_the_timing(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(
        "[timing]\nfailover_timeout_s = 6\nwrite_timeout_s = 2.5\n\n"
        f'[node]\ndata_dir = "{tmp_path}"\ncoordinator = "http://127.0.0.1:7000"\n\n'
        '[coordinator]\nid = "c1"\nraft = "127.0.0.1:7100"\n'
        f'data_dir = "{tmp_path}"\nraft_election_min_s = 0.3\n'
    )
    node = load_config({}, {}, path)
    coord = coordinator(["--config", str(path)], {})
    assert node.timing == coord.timing == TimingContract(failover_timeout_s=6,
                                                         write_timeout_s=2.5)
    assert coord.id == "c1" and coord.timings.election_min == 0.3


def test_coordinator_precedence_is_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('id = "from-file"\nraft = "127.0.0.1:7100"\ndata_dir = "/tmp/x"\n'
                    'listen = "127.0.0.1:1"\nreplication_factor = 3\n')
    environ = {"SHARDKV_COORDINATOR_ID": "from-env", "SHARDKV_LISTEN": "127.0.0.1:2"}
    config = coordinator(["--config", str(path), "--listen", "127.0.0.1:3"], environ)
    assert (config.id, config.listen, config.replication_factor) == ("from-env",
                                                                     "127.0.0.1:3", 3)


def test_existing_environment_names_still_work(tmp_path: Path) -> None:
    environ = {"SHARDKV_FAILOVER_TIMEOUT_S": "4", "SHARDKV_WRITE_TIMEOUT_S": "2",
               "SHARDKV_RAFT_HEARTBEAT_S": "0.05", "SHARDKV_RAFT_PASSWORD": "pw",
               "SHARDKV_ADMIN_TOKEN": "tok", "SHARDKV_PEERS": "c2=127.0.0.1:7101,"
               "c3=127.0.0.1:7102"}
    coord = coordinator(COORDINATOR_FLAGS, environ)
    assert coord.timing.failover_timeout_s == 4 and coord.timing.write_timeout_s == 2
    assert coord.timings.append_entries_period == 0.05 and coord.group_size == 3
    assert (coord.raft_password, coord.admin_token) == ("pw", "tok")
    node = load_config({"data_dir": str(tmp_path)}, environ)
    assert node.timing.write_timeout_s == 2 and node.timing.lease_s == lease_for(4)


def test_secrets_are_not_flags() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting.*raft_password"):
        coordinator_config.load_coordinator_config(
            {"id": "c1", "raft_password": "pw"}, {})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SHARDKV_FAILOVER_TIMEOUT_S": "0.1"}, "between 0.2 and 600"),
        ({"SHARDKV_FAILOVER_TIMEOUT_S": "soon"}, "failover_timeout_s must be a number"),
        # 0.3 s leaves no lease once the 0.3 s margin and 5 % drift are taken out.
        ({"SHARDKV_FAILOVER_TIMEOUT_S": "0.3"}, "too short for a lease"),
        ({"SHARDKV_LEASE_MARGIN_S": "3"}, "too short for a lease"),
        ({"SHARDKV_CLOCK_DRIFT": "0.9"}, "clock_drift must be between"),
        ({"SHARDKV_WRITE_TIMEOUT_S": "0"}, "write_timeout_s must be in"),
    ],
)
def test_the_timing_contract_is_validated_the_same_for_both(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({"data_dir": str(tmp_path)}, environ)
    with pytest.raises(ConfigError, match=message):
        coordinator(COORDINATOR_FLAGS, environ)


def test_lease_is_always_inside_the_failover_timeout() -> None:
    for timeout in (0.5, 1.0, 3.0, 30.0):
        contract = TimingContract(failover_timeout_s=timeout)
        drift = contract.clock_drift
        assert contract.lease_s * (1 + drift) + contract.lease_margin_s <= \
            timeout * (1 - drift) + 1e-9


def test_unknown_key_in_the_shared_timing_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[timing]\nfailover_timeout = 3\n[node]\ndata_dir = "{tmp_path}"\n')
    with pytest.raises(ConfigError, match=r"unknown setting.*failover_timeout"):
        load_config({}, {}, path)


@pytest.mark.parametrize("command", [["node", "--data-dir", "/tmp"],
                                     ["coordinator", "--id", "c1", "--raft", "127.0.0.1:1",
                                      "--data-dir", "/tmp"]])
def test_both_processes_exit_2_with_one_sentence(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "shardkv.cluster.cli", *command],
                          env={"SHARDKV_FAILOVER_TIMEOUT_S": "0.1", "PATH": "/usr/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "configuration error: failover_timeout_s" in lines[0]
