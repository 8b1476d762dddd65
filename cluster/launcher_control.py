"""``shardkv node|coordinator start|stop|restart ID``: care of one process of a local cluster.

The launcher started by ``shardkv up`` owns its processes (it holds them as children, restarts
them under ``--supervise``, writes ``cluster.json``). So the care commands do not touch
processes themselves: they leave a request in ``DIR/control/`` and the launcher, which checks
that folder several times a second, carries it out and answers beside it. One owner means
supervision never fights a ``stop``, and ``cluster.json`` always says who runs (``state``:
running, stopped, exited).

A request is ``<n>.request`` (``{"action", "id"}``), written atomically; the answer is
``<n>.reply`` (``{"ok", "message", "pid"}``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from shardkv.cluster.launcher import LaunchError, LocalCluster, write_json_atomically
from shardkv.cluster.local_processes import is_shardkv_process, pid_alive

ACTIONS = ("start", "stop", "restart")
CONTROL_DIR = "control"
REPLY_TIMEOUT_S = 120.0


class ControlError(Exception):
    """The request could not be made (no launcher runs in DIR, no answer in time)."""


# -- the launcher's side ---------------------------------------------------------------------


def serve_requests(cluster: LocalCluster) -> list[str]:
    """Carry out every pending request; returns one line per request, for the launcher's
    output."""
    folder = cluster.directory / CONTROL_DIR
    done: list[str] = []
    if not folder.is_dir():
        return done
    for request_file in sorted(folder.glob("*.request")):
        try:
            request = json.loads(request_file.read_text())
            reply = _carry_out(cluster, str(request["action"]), str(request["id"]))
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "message": f"bad request: {exc}"}
        write_json_atomically(request_file.with_suffix(".reply"), reply)
        request_file.unlink(missing_ok=True)
        done.append(str(reply["message"]))
    return done


def _carry_out(cluster: LocalCluster, action: str, process_id: str) -> dict[str, Any]:
    try:
        spec = cluster.spec(process_id)
    except KeyError:
        known = ", ".join(s.id for s in cluster.plan.processes)
        return {"ok": False, "message": f"no process {process_id!r} in this cluster "
                f"(there are: {known})"}
    try:
        if action in ("stop", "restart"):
            status = cluster.stop_one(process_id)
            if action == "stop":
                how = "was not running" if status is None else f"exit status {status}"
                return {"ok": True, "message": f"stopped {spec.kind} {process_id} ({how})",
                        "pid": None}
        if action in ("start", "restart"):
            if cluster.state(process_id) == "running":
                return {"ok": True, "message": f"{spec.kind} {process_id} is already running "
                        f"(pid {cluster.pid_of(process_id)})", "pid": cluster.pid_of(process_id)}
            pid = cluster.restart(process_id)
            cluster.wait_answers(process_id)
            verb = "restarted" if action == "restart" else "started"
            return {"ok": True, "message": f"{verb} {spec.kind} {process_id} (pid {pid}, "
                    f"{spec.url}, log {cluster.log_path(spec)})", "pid": pid}
    except LaunchError as exc:
        return {"ok": False, "message": str(exc)}
    return {"ok": False, "message": f"unknown action {action!r} (one of {', '.join(ACTIONS)})"}


# -- the command's side ----------------------------------------------------------------------


def launcher_pid(directory: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int((directory / "launcher.pid").read_text().strip())
        if pid_alive(pid) and is_shardkv_process(pid):
            return pid
    return None


def request(directory: Path, action: str, process_id: str,
            timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
    """Ask the launcher running in ``directory`` to act on one process; its answer."""
    if launcher_pid(directory) is None:
        raise ControlError(f"no cluster launcher runs in {directory} (start one with "
                           f"`shardkv up --dir {directory} --detach`)")
    folder = directory / CONTROL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    write_json_atomically(folder / f"{name}.request", {"action": action, "id": process_id})
    reply_file = folder / f"{name}.reply"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reply_file.is_file():
            with contextlib.suppress(ValueError):
                reply = json.loads(reply_file.read_text())
                reply_file.unlink(missing_ok=True)
                return dict(reply)
        if launcher_pid(directory) is None:
            raise ControlError(f"the launcher in {directory} exited before answering")
        time.sleep(0.05)
    (folder / f"{name}.request").unlink(missing_ok=True)
    raise ControlError(f"the launcher in {directory} did not answer within {timeout:.0f}s")


def add_care_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("id", help="the process id from `shardkv up` (n1, c2, ...)")
    parser.add_argument("--dir", default=".shardkv",
                        help="the cluster directory of `shardkv up` (default .shardkv)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def run_care(kind: str, argv: list[str]) -> int:
    """``shardkv node|coordinator start|stop|restart ID [--dir DIR] [--json]``."""
    parser = argparse.ArgumentParser(
        prog=f"shardkv {kind}",
        description=f"Start, stop (SIGTERM, then wait until it has exited) or restart one "
                    f"{kind} of the local cluster that `shardkv up` runs in DIR.")
    add_care_arguments(parser)
    args = parser.parse_args(argv)
    wanted = "c" if kind == "coordinator" else "n"
    if not args.id.startswith(wanted):
        print(f"shardkv {kind}: {args.id!r} is not a {kind} id ({kind} ids start with "
              f"{wanted!r})", file=sys.stderr)
        return 2
    directory = Path(args.dir).resolve()
    try:
        reply = request(directory, args.action, args.id)
    except ControlError as exc:
        reply = {"ok": False, "message": str(exc)}
    if args.json:
        print(json.dumps(reply))
    else:
        print(reply["message"], file=sys.stdout if reply["ok"] else sys.stderr)
    return 0 if reply["ok"] else 1

