"""A simulated power loss for one directory tree: only what was made durable survives.

A SIGKILL keeps every byte the process wrote (the kernel's page cache survives it), so a test
that "crashes" by killing a process cannot tell whether an fsync is there. This module can:
inside ``SimulatedDisk(root)`` every ``os.fsync``/``os.fdatasync`` on a file or directory
under ``root`` is recorded; ``cut_power()`` freezes, and ``reboot()`` writes back into ``root``,
what a machine that lost power at that instant could have on disk:

- a file's content is what it held at its last fsync/fdatasync (or when the disk was armed),
  never anything written after it; a file never synced since it was created is empty;
- a directory's entries (names -> files) are what they were at the directory's last fsync (or
  when armed): a file created, renamed or deleted since then is back to before;
- optionally (``tear=True``) a file that grew since its last sync keeps a random prefix of the
  unsynced bytes: a torn last write;
- optionally (``persisted_renames``) chosen renames since the directory's last fsync are kept
  anyway, as a journaling filesystem may commit a rename before the data or other renames.

Why this design (and not wrapping every write): syncs are the only calls whose *absence*
matters, and every shardkv writer reaches them through ``os.fsync``/``os.fdatasync``
(``cluster/durable_file.py``), looked up at call time. What was written is read back from the
file itself at the moment it is synced (through ``/proc/self/fd``, so a write-only descriptor
works too), which covers every way of writing (``os.write``, buffered files, ``truncate``)
without a model of each. Files are identified by inode; the disk keeps a read-only descriptor
on every inode it has seen, so an inode number cannot be reused by a new file mid-test.

Not covered: syncs made in C (SQLite's own, which shardkv turns off anyway:
``synchronous=NORMAL``), ``O_SYNC``/``O_DSYNC`` writes, ``os.sync``/``sync_file_range`` (none
are used), and writes racing a sync of the same file from another thread (the content read
at sync time may include them). Linux only (``/proc/self/fd``).
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_REAL_FSYNC = os.fsync
_REAL_FDATASYNC = os.fdatasync
_REAL_REPLACE = os.replace
_REAL_RENAME = os.rename

Listing = dict[str, int]  # name -> inode


@dataclass
class SyncLog:
    """What the disk saw, for assertions and failure messages."""

    file_syncs: list[str] = field(default_factory=list)
    dir_syncs: list[str] = field(default_factory=list)
    renames: list[tuple[str, str]] = field(default_factory=list)

    def synced(self, suffix: str) -> bool:
        return any(p.endswith(suffix) for p in self.file_syncs + self.dir_syncs)


@dataclass
class _PendingRename:
    dir_ino: int
    src: str
    dst: str
    ino: int


class SimulatedDisk:
    """Use as a context manager around the code under test, then ``cut_power()`` and
    ``reboot()``."""

    def __init__(self, root: Path, *, seed: int = 0) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed)
        self.log = SyncLog()
        self._lock = threading.Lock()
        self._recording = False
        self._held: dict[int, int] = {}  # inode -> our read-only fd (keeps the inode alive)
        self._is_dir: dict[int, bool] = {}
        self._files: dict[int, bytes] = {}  # durable content
        self._dirs: dict[int, Listing] = {}  # durable listings
        self._renames: list[_PendingRename] = []
        self._root_ino = os.stat(self.root).st_ino
        self._frozen: dict | None = None
        self._cut_before: Callable[[str, bool], bool] | None = None
        self._cut_options: dict = {}

    # -- arming ------------------------------------------------------------------------------

    def __enter__(self) -> SimulatedDisk:
        self._baseline(self.root)
        os.fsync, os.fdatasync = self._on_fsync, self._on_fdatasync
        os.replace, os.rename = self._on_replace, self._on_rename
        self._recording = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()

    def _stop(self) -> None:
        self._recording = False
        os.fsync, os.fdatasync = _REAL_FSYNC, _REAL_FDATASYNC
        os.replace, os.rename = _REAL_REPLACE, _REAL_RENAME

    def _baseline(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            self._record_dir(fd)
        finally:
            os.close(fd)
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                self._baseline(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    self._record_file(fd)
                finally:
                    os.close(fd)

    # -- the patched calls -----------------------------------------------------------------

    def _on_fsync(self, fd: int) -> None:
        _REAL_FSYNC(fd)
        self._after_sync(fd)

    def _on_fdatasync(self, fd: int) -> None:
        _REAL_FDATASYNC(fd)
        self._after_sync(fd)

    def _on_replace(self, src: object, dst: object, **kwargs: object) -> None:
        self._note_rename(src, dst)
        _REAL_REPLACE(src, dst, **kwargs)  # type: ignore[arg-type]

    def _on_rename(self, src: object, dst: object, **kwargs: object) -> None:
        self._note_rename(src, dst)
        _REAL_RENAME(src, dst, **kwargs)  # type: ignore[arg-type]

    def _note_rename(self, src: object, dst: object) -> None:
        if not self._recording or isinstance(src, int):
            return
        src_path = Path(os.fsdecode(os.fspath(src))).resolve()  # type: ignore[arg-type]
        dst_path = Path(os.fsdecode(os.fspath(dst))).resolve()  # type: ignore[arg-type]
        if not _inside(dst_path, self.root) or src_path.parent != dst_path.parent:
            return
        with self._lock:
            try:
                ino = os.lstat(src_path).st_ino
                parent = os.stat(dst_path.parent).st_ino
            except FileNotFoundError:
                return
            self._hold_path(src_path, ino)
            self._renames.append(_PendingRename(parent, src_path.name, dst_path.name, ino))
            self.log.renames.append((str(src_path), str(dst_path)))

    def _after_sync(self, fd: int) -> None:
        if not self._recording:
            return
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if target.endswith(" (deleted)") or not _inside(Path(target), self.root):
            return
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if self._cut_before is not None and self._cut_before(target, is_dir):
            self.cut_power(**self._cut_options)
            return
        with self._lock:
            if is_dir:
                self._record_dir(fd)
                self.log.dir_syncs.append(target)
            else:
                self._record_file(fd)
                self.log.file_syncs.append(target)

    # -- recording ---------------------------------------------------------------------------

    def _hold(self, fd: int) -> int:
        """Our own descriptor on ``fd``'s inode (opened once per inode)."""
        ino = os.fstat(fd).st_ino
        if ino not in self._held:
            self._held[ino] = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
            self._is_dir[ino] = stat.S_ISDIR(os.fstat(fd).st_mode)
        return ino

    def _hold_path(self, path: Path, ino: int) -> None:
        if ino in self._held:
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            self._hold(fd)
        finally:
            os.close(fd)

    def _record_file(self, fd: int) -> None:
        ino = self._hold(fd)
        self._files[ino] = _read_all(self._held[ino])

    def _record_dir(self, fd: int) -> None:
        ino = self._hold(fd)
        listing: Listing = {}
        for name in os.listdir(fd):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                continue
            listing[name] = st.st_ino
            if st.st_ino not in self._held:
                try:
                    child = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError:
                    continue
                try:
                    self._hold(child)
                finally:
                    os.close(child)
        self._dirs[ino] = listing
        self._renames = [r for r in self._renames if r.dir_ino != ino]

    # -- the power loss ----------------------------------------------------------------------

    def cut_power_before_sync(
        self, when: Callable[[str, bool], bool], **options: object
    ) -> None:
        """Cut the power just before the first sync for which ``when(path, is_dir)`` is true
        (that sync is then not recorded; the code runs on, as if nothing happened, and
        ``reboot()`` later puts the frozen image on disk). ``options`` go to ``cut_power``."""
        self._cut_before, self._cut_options = when, options

    def cut_power(
        self,
        *,
        tear: bool = False,
        persisted_renames: Callable[[str], bool] | None = None,
    ) -> None:
        """The power goes out now: stop recording and freeze the durable image. The code under
        test may then be closed or dropped (what it writes from here on is lost), and
        ``reboot()`` puts the image on disk."""
        with self._lock:
            self._stop()
            self._cut_before = None
            self._frozen = self._image(self._root_ino, tear, persisted_renames)

    def reboot(self) -> None:
        """Rewrite ``root`` to the image frozen by ``cut_power()``."""
        image = self._frozen
        if image is None:
            raise RuntimeError("reboot() before cut_power()")
        for child in list(self.root.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        _write_image(self.root, image)

    def _listing(self, ino: int, persisted: Callable[[str], bool] | None) -> Listing:
        listing = dict(self._dirs.get(ino, {}))
        if persisted is not None:
            for r in self._renames:
                if r.dir_ino == ino and persisted(r.dst):
                    if listing.get(r.src) == r.ino:
                        del listing[r.src]
                    listing[r.dst] = r.ino
        return listing

    def _image(self, ino: int, tear: bool, persisted: Callable[[str], bool] | None) -> dict:
        image: dict[str, bytes | dict] = {}
        for name, child in self._listing(ino, persisted).items():
            if self._is_dir.get(child):
                image[name] = self._image(child, tear, persisted)
            else:
                image[name] = self._content(child, tear)
        return image

    def _content(self, ino: int, tear: bool) -> bytes:
        durable = self._files.get(ino, b"")
        if not tear or ino not in self._held:
            return durable
        current = _read_all(self._held[ino])
        if len(current) <= len(durable) or not current.startswith(durable):
            return durable
        return current[: len(durable) + self.rng.randrange(len(current) - len(durable))]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks, offset = [], 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_image(directory: Path, image: dict) -> None:
    for name, content in image.items():
        path = directory / name
        if isinstance(content, dict):
            path.mkdir()
            _write_image(path, content)
        else:
            path.write_bytes(content)
