"""The node's config model: sources, precedence, and the messages for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from shardkv.cluster.limits import HARD_MAX_VALUE_BYTES
from shardkv.node.config import ConfigError, load_config, parse_listen


def _flags(**values: object) -> dict[str, object]:
    return dict(values)


def test_flags_alone_give_a_complete_config(tmp_path: Path) -> None:
    config = load_config(_flags(data_dir=str(tmp_path), listen="0.0.0.0:7101"), {})
    assert config.data_dir == tmp_path
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 7101)
    assert config.engine == "memory" and config.fsync == "always"
    assert config.standalone and config.coordinators == ()


def test_precedence_is_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        f'data_dir = "{tmp_path}"\nlisten = "127.0.0.1:1"\nengine = "sqlite"\n'
        'fsync = "never"\nmax_value_bytes = 2048\n'
    )
    environ = {"SHARDKV_LISTEN": "127.0.0.1:2", "SHARDKV_FSYNC": "interval"}
    config = load_config(_flags(listen="127.0.0.1:3", engine=None), environ, path)
    assert config.listen_port == 3  # flag beats environment beats file
    assert config.fsync == "interval"  # environment beats file
    assert config.engine == "sqlite"  # file, nothing overrides it (None flags are unset)
    assert config.max_value_bytes == 2048


def test_node_table_in_a_shared_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[node]\ndata_dir = "{tmp_path}"\ncoordinator = ["http://c1:7000", "http://c2:7000/"]'
        '\nshard = "s1"\n\n[coordinator]\nid = "c1"\n'
    )
    config = load_config({}, {}, path)
    assert config.coordinators == ("http://c1:7000", "http://c2:7000")
    assert config.shard == "s1" and not config.standalone


def test_environment_strings_are_parsed(tmp_path: Path) -> None:
    environ = {
        "SHARDKV_DATA_DIR": str(tmp_path),
        "SHARDKV_ENGINE": "SQLite",
        "SHARDKV_FSYNC_INTERVAL_MS": "250",
        "SHARDKV_COORDINATOR": "http://a:1,http://b:2",
        "SHARDKV_MAX_VALUE_BYTES": "4_096",
    }
    config = load_config({}, environ)
    assert config.engine == "sqlite"
    assert config.fsync_interval_ms == 250
    assert config.coordinators == ("http://a:1", "http://b:2")
    assert config.max_value_bytes == 4096


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("localhost:7100", ("localhost", 7100)),
        ("[::1]:9000", ("::1", 9000)),
    ],
)
def test_listen_addresses(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "no data directory"),
        ({"listen": "127.0.0.1"}, "HOST:PORT"),
        ({"listen": "127.0.0.1:http"}, "port must be a number"),
        ({"listen": "127.0.0.1:70000"}, "between 0 and 65535"),
        ({"listen": "::1:7000"}, "in brackets"),
        ({"listen": "[nope]:7000"}, "bad IPv6"),
        ({"engine": "rocksdb"}, "unknown engine 'rocksdb'"),
        ({"fsync": "sometimes"}, "unknown fsync policy"),
        ({"max_value_bytes": str(HARD_MAX_VALUE_BYTES + 1)}, "over the hard cap"),
        ({"max_value_bytes": "0"}, "max_value_bytes must be >= 1"),
        ({"max_value_bytes": "lots"}, "must be an integer"),
        ({"fsync_interval_ms": "0"}, "fsync_interval_ms must be between 1"),
        ({"coordinator": "c1:7000"}, "not an http:// or https:// URL"),
        ({"shutdown_grace_s": "nan"}, "finite number"),
    ],
)
def test_each_mistake_has_a_clear_message(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    flags: dict[str, object] = {"data_dir": str(tmp_path)} if settings else {}
    flags.update(settings)
    with pytest.raises(ConfigError, match=message):
        load_config(flags, {})


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        load_config({"data_dir": str(path)}, {})


def test_config_file_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"data_dir": str(tmp_path)}, {}, missing)
    broken = tmp_path / "broken.toml"
    broken.write_text("data_dir = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, {}, broken)
    typo = tmp_path / "typo.toml"
    typo.write_text(f'data_dir = "{tmp_path}"\nengnie = "sqlite"\n')
    with pytest.raises(ConfigError, match=r"unknown setting.*engnie"):
        load_config({}, {}, typo)


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'data_dir = "{tmp_path}"\nfsync = "never"\n')
    config = load_config({}, {"SHARDKV_CONFIG": str(path)})
    assert config.fsync == "never"
