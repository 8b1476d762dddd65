"""Client-side encryption of backup files: AES-256-GCM in independently sealed chunks.

A whole file cannot be one GCM message without holding it in memory (the tag comes at the
end and nothing may be released before it is checked), so a file is a header and a sequence
of sealed chunks::

    header   "SKVBENC1" | chunk size (4, big endian) | random nonce prefix (8)
    chunk    length (4, big endian; top bit set on the last chunk) | ciphertext + tag (16)

Chunk ``i`` uses the nonce ``prefix || i`` (96 bits, never reused under one key: the prefix
is random per file, the counter per chunk) and authenticates, besides itself, the header,
its index and whether it is the last. So a reordered, dropped, duplicated or truncated chunk
fails like a flipped bit does, and a reader that never saw a chunk marked last knows the
file was cut short.

The key is 32 bytes, given as 64 hex characters or base64, in ``SHARDKV_BACKUP_KEY`` or in a
file named by ``--key-file`` / ``SHARDKV_BACKUP_KEY_FILE``. The manifest records a key id
(an HMAC of a constant under the key), so a wrong key is named before any data is read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from shardkv.backup.repository.errors import BackupError, DamagedFile, WrongKey

KEY_ENV = "SHARDKV_BACKUP_KEY"
KEY_FILE_ENV = "SHARDKV_BACKUP_KEY_FILE"
ALGORITHM = "AES-256-GCM"
MAGIC = b"SKVBENC1"
_HEADER = struct.Struct(">8sI8s")
_LENGTH = struct.Struct(">I")
_LAST = 0x8000_0000
TAG_BYTES = 16
DEFAULT_CHUNK_BYTES = 1 << 20


def parse_key(text: str, source: str) -> bytes:
    """32 bytes from 64 hex characters or base64; ``BackupError`` naming ``source`` else."""
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise BackupError(f"the backup key in {source} is not 32 bytes as 64 hex characters "
                          "or base64 (make one with `openssl rand -hex 32`)")
    return key


def load_key(key_file: str | None = None) -> bytes | None:
    """The key from ``key_file``, else ``SHARDKV_BACKUP_KEY_FILE``, else
    ``SHARDKV_BACKUP_KEY``; None when none is set (no encryption)."""
    path = key_file or os.environ.get(KEY_FILE_ENV, "").strip()
    if path:
        try:
            return parse_key(Path(path).read_text(), path)
        except OSError as exc:
            raise BackupError(f"cannot read the backup key file {path}: {exc.strerror}") from None
    text = os.environ.get(KEY_ENV, "").strip()
    return parse_key(text, KEY_ENV) if text else None


def key_id(key: bytes) -> str:
    """Names a key without revealing it (what the manifest records)."""
    return hmac.new(key, b"shardkv-backup-key-id", hashlib.sha256).hexdigest()[:16]


def check_key(expected_id: str | None, key: bytes | None, what: str) -> None:
    """``WrongKey`` unless ``key`` is the one ``expected_id`` names (None: not encrypted)."""
    if expected_id is None:
        return
    if key is None:
        raise WrongKey(f"{what} is encrypted (key id {expected_id}): set {KEY_ENV} or "
                       f"pass --key-file")
    if not hmac.compare_digest(key_id(key), expected_id):
        raise WrongKey(f"wrong encryption key for {what}: it was written with key id "
                       f"{expected_id}, the key given has id {key_id(key)}")


class Encryptor:
    """Turns plaintext pieces into the sealed format; ``feed`` then ``finish``."""

    def __init__(self, key: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self._aead = AESGCM(key)
        self.chunk_bytes = chunk_bytes
        self.header = _HEADER.pack(MAGIC, chunk_bytes, secrets.token_bytes(8))
        self._prefix = self.header[-8:]
        self._pending = bytearray()
        self._index = 0
        self._started = False

    def _seal(self, plain: bytes, last: bool) -> bytes:
        nonce = self._prefix + struct.pack(">I", self._index)
        aad = self.header + struct.pack(">IB", self._index, int(last))
        sealed = self._aead.encrypt(nonce, plain, aad)
        self._index += 1
        return _LENGTH.pack(len(sealed) | (_LAST if last else 0)) + sealed

    def feed(self, data: bytes) -> bytes:
        out = [] if self._started else [self.header]
        self._started = True
        self._pending += data
        # Keep the last full chunk back: only at finish is it known to be the last.
        while len(self._pending) > self.chunk_bytes:
            out.append(self._seal(bytes(self._pending[:self.chunk_bytes]), False))
            del self._pending[:self.chunk_bytes]
        return b"".join(out)

    def finish(self) -> bytes:
        head = b"" if self._started else self.header
        self._started = True
        tail = self._seal(bytes(self._pending), True)
        self._pending.clear()
        return head + tail


class Decryptor:
    """The inverse of ``Encryptor``, streaming; ``name`` is used in error messages."""

    def __init__(self, key: bytes, name: str) -> None:
        self._aead = AESGCM(key)
        self.name = name
        self._buffer = bytearray()
        self._header: bytes | None = None
        self._index = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = []
        if self._header is None:
            if len(self._buffer) < _HEADER.size:
                return b""
            header = bytes(self._buffer[:_HEADER.size])
            magic, chunk_bytes, _prefix = _HEADER.unpack(header)
            if magic != MAGIC or not 0 < chunk_bytes <= 64 << 20:
                raise DamagedFile(self.name, "not an encrypted backup file (bad header)")
            self._header = header
            self._limit = chunk_bytes + TAG_BYTES
            del self._buffer[:_HEADER.size]
        while len(self._buffer) >= _LENGTH.size:
            if self.done:
                raise DamagedFile(self.name, "bytes after the last encrypted chunk")
            (word,) = _LENGTH.unpack_from(self._buffer)
            last, length = bool(word & _LAST), word & ~_LAST
            if not TAG_BYTES <= length <= self._limit:
                raise DamagedFile(self.name, f"impossible chunk length {length}")
            if len(self._buffer) < _LENGTH.size + length:
                break
            sealed = bytes(self._buffer[_LENGTH.size:_LENGTH.size + length])
            del self._buffer[:_LENGTH.size + length]
            nonce = self._header[-8:] + struct.pack(">I", self._index)
            aad = self._header + struct.pack(">IB", self._index, int(last))
            try:
                out.append(self._aead.decrypt(nonce, sealed, aad))
            except InvalidTag:
                raise WrongKey(f"cannot decrypt {self.name} (chunk {self._index}): the key is "
                               "wrong or the file was altered") from None
            self._index += 1
            self.done = last
        return b"".join(out)

    def finish(self) -> None:
        if self._header is None or not self.done or self._buffer:
            raise DamagedFile(self.name, "the encrypted file is truncated (no last chunk)")
