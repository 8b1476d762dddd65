"""``shardkv node``: run a storage node, ``shardkv node verify`` a data directory, or
``shardkv node snapshot|compact|disk ID`` a running one (``maintenance_cli.py``).

Configuration mistakes exit 2 with one sentence on stderr (the same status argparse uses for
a bad flag); a node that cannot start (port taken, corrupt WAL) exits 1; a graceful stop
exits 0. ``verify`` exits 0 when the data directory is healthy and 1 when it is not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from shardkv.cluster.cluster_token import MissingCredential, cluster_token, require_credentials
from shardkv.cluster.settings import ConfigError, config_failed
from shardkv.node import maintenance_cli
from shardkv.node.config import ENGINES, FSYNC_POLICIES, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file (keys at the top level or "
                        "in a [node] table); the environment and flags override it")
    parser.add_argument("--data-dir", metavar="DIR", help="where the WAL, snapshots and "
                        "engine files live (SHARDKV_DATA_DIR)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to serve on; port 0 "
                        "picks a free one (SHARDKV_LISTEN, default 127.0.0.1:7100)")
    parser.add_argument("--engine", choices=ENGINES, type=str.lower,
                        help="materialized state: memory (default) or sqlite")
    parser.add_argument("--fsync", choices=FSYNC_POLICIES, type=str.lower,
                        help="WAL durability: always (group commit, default), interval, never")
    parser.add_argument("--fsync-interval-ms", metavar="N", help="sync period for "
                        "--fsync interval (default 100)")
    parser.add_argument("--max-value-bytes", metavar="N", help="largest value accepted "
                        "(default 1 MiB, at most 16 MiB)")
    parser.add_argument("--coordinator", metavar="URL[,URL]", help="coordinator URLs; "
                        "without them the node is the primary of a one-node shard")
    parser.add_argument("--shard", metavar="ID", help="the shard this node belongs to")
    parser.add_argument("--id", dest="node_id", metavar="ID", help="this node's id in the "
                        "cluster map")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--keep-snapshots", metavar="N", help="snapshot files kept "
                        "(default 2)")
    parser.add_argument("--retain-wal-bytes", metavar="N|auto", help="WAL bytes kept behind "
                        "a snapshot for lagging replicas (default auto: max(64 MiB, last "
                        "snapshot), capped by free disk)")
    parser.add_argument("--low-disk-bytes", metavar="N|auto", help="free space under which "
                        "writes are refused with DISK_FULL (default auto: 5%% of the disk, at "
                        "most 256 MiB; 0 turns it off)")
    parser.add_argument("--archive-to", metavar="DIR|s3://BUCKET/PREFIX", help="copy the "
                        "committed WAL there continuously, for point-in-time restore "
                        "(SHARDKV_ARCHIVE_TO; docs/backup.md)")
    parser.add_argument("--lean-rest", choices=("on", "off"), help="serve GET/PUT of a key "
                        "through the lean HTTP lane (default on; SHARDKV_LEAN_REST; "
                        "docs/performance.md)")
    actions = parser.add_subparsers(dest="node_action",
                                    metavar="[verify|snapshot|compact|disk]")
    verify = actions.add_parser("verify", help="check a (stopped) node's data directory: "
                                "WAL checksums, segment order, snapshots",
                                description="Check a node's data directory without changing "
                                "it. Exit 0 if healthy, 1 if not.")
    verify.add_argument("--data-dir", dest="verify_data_dir", metavar="DIR", required=True)
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--allow-torn-tail", action="store_true",
                        help="accept a damaged last record (recovery drops it) as healthy")
    maintenance_cli.add_actions(actions)


_FLAG_KEYS = ("data_dir", "listen", "engine", "fsync", "fsync_interval_ms", "max_value_bytes",
              "shard", "node_id", "log_level", "keep_snapshots", "retain_wal_bytes",
              "low_disk_bytes", "archive_to", "lean_rest")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "node_action", None) == "verify":
        return run_verify(Path(args.verify_data_dir), as_json=args.json,
                          allow_torn_tail=args.allow_torn_tail)
    if getattr(args, "node_action", None) in maintenance_cli.ACTIONS:
        return maintenance_cli.run(args)
    flags: dict[str, Any] = {key: getattr(args, key, None) for key in _FLAG_KEYS}
    flags["coordinator"] = args.coordinator
    try:
        config = load_config(flags, os.environ, args.config)
        if not config.standalone:
            require_credentials("node", config.listen_host, token=cluster_token())
    except ConfigError as exc:
        return config_failed("shardkv node", exc)
    except MissingCredential as exc:
        print(f"shardkv node: configuration error: {exc}", file=sys.stderr)
        return 2
    from shardkv.node.server import run_node  # the server's imports are only needed here

    return run_node(config)


def _jsonable(report: Any) -> Any:
    if hasattr(report, "to_dict"):
        return report.to_dict()
    if is_dataclass(report) and not isinstance(report, type):
        return asdict(report)
    return report


def run_verify(data_dir: Path, *, as_json: bool, allow_torn_tail: bool = False) -> int:
    from shardkv.node.storage.data_verify import verify_data_dir

    if not data_dir.is_dir():
        print(f"shardkv node verify: {data_dir} is not a directory", file=sys.stderr)
        return 2
    report = verify_data_dir(data_dir, allow_torn_tail=allow_torn_tail)
    if as_json:
        print(json.dumps(_jsonable(report), indent=2, default=str))
    else:
        print(report.render() if hasattr(report, "render") else str(report))
    return 0 if report.healthy else 1


COMMANDS = [
    ("node", "run a storage node (or: shardkv node verify --data-dir DIR; "
     "shardkv node start|stop|restart ID for a cluster from `shardkv up`; "
     "shardkv node snapshot|compact|disk ID)", add_arguments, run),
]
