"""The credentials ``shardkv up`` generates for the cluster it launches.

Two secrets, each in its own file of the cluster directory, mode 0600, created once and kept
across restarts of the same cluster:

- ``cluster.token``: the cluster credential (``cluster/cluster_token.py``); processes get
  its path in ``SHARDKV_CLUSTER_TOKEN_FILE``, so it never shows in a process listing;
- ``raft.password``: the coordinators' Raft password (``SHARDKV_RAFT_PASSWORD``).

A value already in the launcher's environment wins over the file (an operator who manages
the secrets elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shardkv.cluster.cluster_token import (
    CLUSTER_TOKEN_ENV,
    CLUSTER_TOKEN_FILE_ENV,
    RAFT_PASSWORD_ENV,
    new_secret,
)
from shardkv.cluster.durable_file import ensure_dir, write_atomically

TOKEN_FILE = "cluster.token"
RAFT_PASSWORD_FILE = "raft.password"


def _read_or_create(path: Path) -> str:
    """The secret in ``path``, or a new one written there (0600, atomically)."""
    try:
        text = path.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    secret = new_secret()
    ensure_dir(path.parent)
    write_atomically(path, (secret + "\n").encode(), mode=0o600)
    return secret


@dataclass(frozen=True, slots=True)
class ClusterCredentials:
    token: str
    token_file: Path
    raft_password: str

    @classmethod
    def for_directory(cls, directory: Path,
                      environ: Mapping[str, str] = os.environ) -> ClusterCredentials:
        token_file = directory / TOKEN_FILE
        token = environ.get(CLUSTER_TOKEN_ENV, "").strip()
        if token:
            ensure_dir(directory)
            write_atomically(token_file, (token + "\n").encode(), mode=0o600)
        else:
            token = _read_or_create(token_file)
        password = environ.get(RAFT_PASSWORD_ENV, "").strip() or _read_or_create(
            directory / RAFT_PASSWORD_FILE)
        return cls(token=token, token_file=token_file, raft_password=password)

    def environment(self) -> dict[str, str]:
        """What a launched process needs in its environment."""
        return {CLUSTER_TOKEN_FILE_ENV: str(self.token_file), RAFT_PASSWORD_ENV: self.raft_password}
