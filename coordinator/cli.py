"""``shardkv coordinator``: run one member of the coordinator group.

    shardkv coordinator --id c1 --listen 127.0.0.1:7000 --raft 127.0.0.1:7100 \\
        --peers c2=127.0.0.1:7101,c3=127.0.0.1:7102 --data-dir data/c1 \\
        [--init-shards 2 --replication-factor 3]

Settings come from ``--config FILE``, the environment and flags (``coordinator/config.py``).
Secrets come from the environment or the file, never from flags (flags show in ``ps``):
``SHARDKV_RAFT_PASSWORD`` (peers authenticate and encrypt Raft traffic with it) and
``SHARDKV_ADMIN_TOKEN`` (bearer token of the admin API). SIGTERM/SIGINT stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping

from shardkv.cluster import event_loop
from shardkv.cluster.settings import ConfigError, config_failed
from shardkv.cluster.structured_log import log_fields, setup_logging
from shardkv.coordinator.config import CoordinatorConfig, load_coordinator_config
from shardkv.coordinator.durable_journal import JournalCorrupted

log = logging.getLogger("shardkv.coordinator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults live in coordinator/config.py: a flag left unset (None) lets the file or the
    # environment decide.
    parser.add_argument("--config", metavar="FILE", help="TOML file (a [coordinator] table or "
                        "the top level, and [timing]); the environment and flags override it")
    parser.add_argument("--id", help="this member's id (SHARDKV_COORDINATOR_ID)")
    parser.add_argument("--listen", help="HTTP HOST:PORT (map, nodes, admin); SHARDKV_LISTEN, "
                        "default 127.0.0.1:7000")
    parser.add_argument("--raft", help="Raft HOST:PORT; bind it to the internal network only "
                        "(SHARDKV_RAFT_ADDR)")
    parser.add_argument("--peers", help="other members: ID=HOST:PORT,... (their Raft "
                        "addresses; SHARDKV_PEERS)")
    parser.add_argument("--peer-urls", help="optional ID=URL,... of the other members' HTTP "
                        "APIs (learned from the map otherwise; SHARDKV_PEER_URLS)")
    parser.add_argument("--advertise-url", help="the URL others use to reach this member's "
                        "HTTP API (SHARDKV_ADVERTISE_URL)")
    parser.add_argument("--data-dir", help="Raft journal dir (SHARDKV_DATA_DIR)")
    parser.add_argument("--init-shards", type=int, default=None,
                        help="bootstrap this many shards on first start (idempotent)")
    parser.add_argument("--replication-factor", type=int, default=None,
                        help="members per shard, the primary counted (default 1)")
    parser.add_argument("--join", action="store_true", default=None,
                        help="join a running group: --peers names every current member, and "
                             "an admin adds this one (POST /admin/coordinators)")
    parser.add_argument("--commit-timeout", type=float, default=None,
                        help="seconds to wait for a map change to commit (default 5)")


_FLAG_KEYS = ("id", "listen", "raft", "peers", "peer_urls", "advertise_url", "data_dir",
              "init_shards", "replication_factor", "join", "commit_timeout")


def config_from_args(args: argparse.Namespace,
                     environ: Mapping[str, str] | None = None) -> CoordinatorConfig:
    """The validated config from parsed flags over the environment and the config file."""
    flags = {key: getattr(args, key, None) for key in _FLAG_KEYS}
    return load_coordinator_config(flags, os.environ if environ is None else environ,
                                   getattr(args, "config", None))


async def serve(config: CoordinatorConfig) -> None:
    from shardkv.coordinator.server import Coordinator

    coordinator = Coordinator(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await coordinator.start()
    await stop.wait()
    log.info("signal received, stopping", extra=log_fields(id=config.id))
    await coordinator.stop()


def run(args: argparse.Namespace) -> int:
    setup_logging("coordinator")
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return config_failed("shardkv coordinator", exc)
    try:
        event_loop.run(serve(config))
    except JournalCorrupted as exc:
        log.error("refusing to start: %s", exc)
        return 3
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


COMMANDS = [
    ("coordinator", "run a coordinator (Raft-replicated cluster map; or: shardkv coordinator "
     "start|stop|restart ID for a cluster from `shardkv up`)", add_arguments, run),
]


def main(argv: list[str] | None = None) -> int:
    """``python -m shardkv.coordinator.cli ...``: the subcommand without the shared CLI."""
    parser = argparse.ArgumentParser(prog="shardkv coordinator")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
