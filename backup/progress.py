"""The progress line the backup tools show on stderr: what, keys, MB, MB/s; at most a few
updates a second, the last one kept with a newline. Silent when asked (``--quiet``)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None,
                 interval_s: float = 0.25) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self._shown = time.monotonic()  # the first line after one interval, not at once
        self._open = False
        self._lock = threading.Lock()  # shards backed up in parallel share the line

    def update(self, label: str, keys: int, nbytes: int, started: float, *,
               force: bool = False) -> None:
        """``keys`` < 0: a step that counts bytes only (checking files)."""
        if self.quiet:
            return
        with self._lock:
            self._update(label, keys, nbytes, started, force)

    def _update(self, label: str, keys: int, nbytes: int, started: float, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._shown < self.interval_s:
            return
        self._shown = now
        elapsed = max(now - started, 1e-6)
        mb = nbytes / 1e6
        counted = f"{keys} keys, " if keys >= 0 else ""
        rate = f", {keys / elapsed:.0f} keys/s" if keys >= 0 else ""
        self.stream.write(f"\r{label}: {counted}{mb:.1f} MB, {mb / elapsed:.1f} MB/s{rate}   ")
        self.stream.flush()
        self._open = True

    def done(self, label: str, keys: int, nbytes: int, started: float) -> None:
        if self.quiet:
            return
        with self._lock:
            self._update(label, keys, nbytes, started, True)
            self._end()

    def end(self) -> None:
        with self._lock:
            self._end()

    def _end(self) -> None:
        if self._open and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self._open = False

    def note(self, text: str) -> None:
        if not self.quiet:
            with self._lock:
                self._end()
                self.stream.write(text + "\n")
                self.stream.flush()
