"""A server under test as a child process: started on a free port, awaited until it answers,
stopped for sure (SIGTERM, then SIGKILL after a grace period).

Both the shardkv node and the reference systems go through this, so each is measured the same
way: its own temporary directory, its log in a file beside it (shown when it fails to start),
and its pid for the CPU accounting of ``proc_stats``.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from shardkv.cluster.local_processes import log_tail, spawn_logged, stop_children


class ServerStartError(RuntimeError):
    """The server exited or never became ready; the message carries the tail of its log."""


class ServerProcess:
    """One child process with its log file, serving HTTP at ``url``. Use as a context manager,
    or call ``stop()``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        url: str,
        ready_path: str = "/health",
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.url = url
        self.ready_url = url + ready_path
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def start(self, *, timeout_s: float = 30.0) -> ServerProcess:
        """Start the process and return once ``ready_url`` answers 200, or raise
        ``ServerStartError`` (the process is then stopped)."""
        # Its own session: a Ctrl-C of the benchmark does not hit it first.
        self._proc = spawn_logged(self.argv, self.log_path, env=self._env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with status {self._proc.returncode} while starting:\n"
                    + self.log_tail()
                )
            if _answers_ok(self.ready_url):
                return self
            time.sleep(0.05)
        self.stop()
        raise ServerStartError(
            f"{self.name} did not answer {self.ready_url} within {timeout_s:.0f}s:\n"
            + self.log_tail()
        )

    def stop(self, *, grace_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. Returns the exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        stop_children([proc], grace_s)
        return proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines) or "(no log)"

    def __enter__(self) -> ServerProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
