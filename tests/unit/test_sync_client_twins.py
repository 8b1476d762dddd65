"""Every async operation of ``Client`` has a blocking twin on ``SyncClient`` with the same
signature, written out in client/sync_commands.py (no methods made at import)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from shardkv.client.commands import Commands
from shardkv.client.sync_client import SyncClient
from shardkv.client.sync_commands import SyncCommands

ROOT = Path(__file__).resolve().parents[2]


def async_operations() -> dict[str, object]:
    return {name: method for name, method in inspect.getmembers(Commands)
            if not name.startswith("_") and inspect.iscoroutinefunction(method)}


def test_every_async_command_has_a_blocking_twin_with_the_same_signature() -> None:
    operations = async_operations()
    assert {"get", "put", "delete", "incr", "batch", "update"} <= set(operations)
    for name, method in operations.items():
        twin = getattr(SyncClient, name, None)
        assert twin is not None, f"SyncClient has no {name}"
        assert not inspect.iscoroutinefunction(twin), f"SyncClient.{name} must block"
        assert inspect.signature(twin) == inspect.signature(method), name  # type: ignore[arg-type]
        assert inspect.getdoc(twin) == inspect.getdoc(method), name


def test_the_twins_are_written_in_the_class_not_attached_at_import() -> None:
    for name in async_operations():
        assert name in vars(SyncCommands), f"{name} is not defined in sync_commands.py"
    assert issubclass(SyncClient, SyncCommands)


def test_the_checked_in_file_is_what_the_generator_writes() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_sync_client.py"),
                           "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_twins_need_a_runner_to_be_instantiated() -> None:
    """``_run`` is abstract: a class that forgets it fails when it is made, not at its first
    call (it used to raise NotImplementedError then)."""
    import pytest

    with pytest.raises(TypeError, match="_run"):
        SyncCommands()  # type: ignore[abstract]

    class Forgetful(SyncCommands):
        pass

    with pytest.raises(TypeError, match="_run"):
        Forgetful()  # type: ignore[abstract]
    assert "_run" not in getattr(SyncClient, "__abstractmethods__", frozenset())
