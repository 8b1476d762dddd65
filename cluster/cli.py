"""The ``shardkv`` entry point: one command, many subcommands.

Each subcommand lives beside what it runs (``shardkv.node.cli`` for ``shardkv node``, and
so on). A command module exposes ``COMMANDS``: a list of ``(name, help, add_arguments, run)``
where ``run(args) -> int`` is the exit status. Modules are imported only when present, so an
install of the client alone still has a working ``shardkv``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

# Module paths that contribute subcommands, in the order they are listed in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "shardkv.node.cli",
    "shardkv.coordinator.cli",
    "shardkv.cluster.launcher_cli",
    "shardkv.cluster.rolling_restart_cli",
    "shardkv.client.cli",
    "shardkv.client.reshard_cli",
    "shardkv.client.events_cli",
    "shardkv.chaos.cli",
    "shardkv.backup.cli",
)

Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[Any], int]]


def _load_commands() -> list[Command]:
    commands: list[Command] = []
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that part is not installed / not built yet
            raise
        commands.extend(module.COMMANDS)
    return commands


def _care_command(argv: list[str]) -> tuple[str, list[str]] | None:
    """``(kind, rest)`` for ``node|coordinator start|stop|restart ...``: those act on a local
    cluster's process by id, while ``shardkv node --flags`` runs a node."""
    if len(argv) >= 2 and argv[0] in ("node", "coordinator") and argv[1] in (
            "start", "stop", "restart"):
        return argv[0], argv[1:]
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardkv",
        description="shardkv: a distributed, sharded key-value cluster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text, add_arguments, run in _load_commands():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub_parser)
        sub_parser.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    care = _care_command(arguments)
    if care is not None:  # `shardkv node|coordinator start|stop|restart ID`
        from shardkv.cluster.launcher_control import run_care
        return run_care(*care)
    parser = build_parser()
    args = parser.parse_args(arguments)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
