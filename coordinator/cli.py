"""``shardkv coordinator``: run one member of the coordinator group.

    shardkv coordinator --id c1 --listen 127.0.0.1:7000 --raft 127.0.0.1:7100 \\
        --peers c2=127.0.0.1:7101,c3=127.0.0.1:7102 --data-dir data/c1 \\
        [--init-shards 2 --replication-factor 3]

Secrets come from the environment, never from flags (flags show in ``ps``):
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

from shardkv.cluster.cluster_token import cluster_token
from shardkv.cluster.structured_log import log_fields, setup_logging
from shardkv.coordinator.config import (
    ConfigError,
    CoordinatorConfig,
    RaftTimings,
    parse_peers,
)
from shardkv.coordinator.durable_journal import JournalCorrupted

log = logging.getLogger("shardkv.coordinator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--id", default=env("SHARDKV_COORDINATOR_ID"), help="this member's id")
    parser.add_argument("--listen", default=env("SHARDKV_LISTEN", "127.0.0.1:7000"),
                        help="HTTP HOST:PORT (map, nodes, admin)")
    parser.add_argument("--raft", default=env("SHARDKV_RAFT_ADDR"),
                        help="Raft HOST:PORT; bind it to the internal network only")
    parser.add_argument("--peers", default=env("SHARDKV_PEERS", ""),
                        help="other members: ID=HOST:PORT,... (their Raft addresses)")
    parser.add_argument("--peer-urls", default=env("SHARDKV_PEER_URLS", ""),
                        help="optional ID=URL,... of the other members' HTTP APIs (learned "
                             "from the map otherwise)")
    parser.add_argument("--advertise-url", default=env("SHARDKV_ADVERTISE_URL"),
                        help="the URL others use to reach this member's HTTP API")
    parser.add_argument("--data-dir", default=env("SHARDKV_DATA_DIR"), help="Raft journal dir")
    parser.add_argument("--init-shards", type=int, default=None,
                        help="bootstrap this many shards on first start (idempotent)")
    parser.add_argument("--replication-factor", type=int, default=1,
                        help="members per shard, the primary counted")
    parser.add_argument("--join", action="store_true",
                        help="join a running group: --peers names every current member, and "
                             "an admin adds this one (POST /admin/coordinators)")
    parser.add_argument("--commit-timeout", type=float, default=5.0,
                        help="seconds to wait for a map change to commit")


def config_from_args(args: argparse.Namespace) -> CoordinatorConfig:
    missing = [name for name in ("id", "raft", "data_dir") if not getattr(args, name)]
    if missing:
        raise ConfigError("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))
    return CoordinatorConfig(
        id=args.id,
        listen=args.listen,
        raft=args.raft,
        data_dir=args.data_dir,
        peers=parse_peers(args.peers),
        peer_urls=parse_peers(args.peer_urls, "--peer-urls"),
        advertise_url=args.advertise_url,
        init_shards=args.init_shards,
        replication_factor=args.replication_factor,
        raft_password=os.environ.get("SHARDKV_RAFT_PASSWORD") or None,
        admin_token=os.environ.get("SHARDKV_ADMIN_TOKEN") or None,
        cluster_token=cluster_token(),
        commit_timeout=args.commit_timeout,
        join=args.join,
        timings=RaftTimings.from_env(),
    )


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
        config.validate()
    except ConfigError as exc:
        print(f"shardkv coordinator: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except JournalCorrupted as exc:
        log.error("refusing to start: %s", exc)
        return 3
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


COMMANDS = [
    ("coordinator", "run a coordinator (Raft-replicated cluster map)", add_arguments, run),
]


def main(argv: list[str] | None = None) -> int:
    """``python -m shardkv.coordinator.cli ...``: the subcommand without the shared CLI."""
    parser = argparse.ArgumentParser(prog="shardkv coordinator")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
