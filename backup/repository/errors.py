"""The errors of a backup repository: each names what is wrong and where, in one sentence,
so that the CLI can print it as it is and exit 1."""

from __future__ import annotations


class BackupError(Exception):
    """Anything that stops a backup, restore or check; the message is for the operator."""


class DestinationUnreachable(BackupError):
    """The destination cannot be reached at all (no such directory or bucket, connection
    refused, credentials refused)."""


class DestinationFull(BackupError):
    """The destination refused bytes for lack of room (ENOSPC, a quota, a size limit)."""


class MissingFile(BackupError):
    """A file the manifest (or the archive index) names is not in the destination."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"missing file {name}" + (f": {detail}" if detail else ""))
        self.name = name


class DamagedFile(BackupError):
    """A file's bytes are not the ones recorded: wrong size, checksum, framing."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"damaged file {name}: {reason}")
        self.name = name
        self.reason = reason


class WrongKey(BackupError):
    """The encryption key given is not the one the backup was written with (or none was
    given for an encrypted backup)."""
