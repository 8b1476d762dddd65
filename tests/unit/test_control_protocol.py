"""The node <-> coordinator protocol version (cluster/control_protocol.py): N and N-1 are
accepted both ways, a missing header is version 1, anything further apart is refused with
UNSUPPORTED_PROTOCOL naming both versions."""

from __future__ import annotations

import pytest
from shardkv.cluster.control_protocol import (
    CONTROL_PROTOCOL_VERSION,
    PROTOCOL_HEADER,
    UNVERSIONED,
    require_compatible,
    supported_versions,
    version_headers,
    version_in,
)
from shardkv.cluster.errors import ErrorCode, InvalidArgument, UnsupportedProtocol, error_from_dict

N = CONTROL_PROTOCOL_VERSION


def test_a_missing_header_is_version_1_and_the_header_round_trips() -> None:
    assert UNVERSIONED == 1 and version_in({}) == 1
    assert version_in(version_headers()) == N
    assert version_in({PROTOCOL_HEADER: " 7 "}) == 7


@pytest.mark.parametrize("raw", ["", "0", "-1", "two", "1.5", "9" * 30])
def test_a_malformed_header_is_an_invalid_argument(raw: str) -> None:
    with pytest.raises(InvalidArgument, match=PROTOCOL_HEADER):
        version_in({PROTOCOL_HEADER: raw})


@pytest.mark.parametrize("theirs", [N - 1, N, N + 1])
def test_versions_one_apart_are_accepted_either_way(theirs: int) -> None:
    require_compatible(theirs, peer="node n1")


@pytest.mark.parametrize(("theirs", "word"), [(N + 2, "newer"), (N + 9, "newer")])
def test_a_version_further_apart_is_refused_naming_both(theirs: int, word: str) -> None:
    with pytest.raises(UnsupportedProtocol) as refused:
        require_compatible(theirs, peer="node n1")
    error = refused.value
    assert error.code is ErrorCode.UNSUPPORTED_PROTOCOL and not error.retryable
    assert error.http_status == 400
    assert f"version {theirs}, {word} than this process's version {N}" in error.message
    assert error.details == {"protocol_version": N, "peer_protocol_version": theirs,
                             "supported": [N - 1, N]}
    # The wire form comes back as the same typed, final error.
    again = error_from_dict(error.to_dict())
    assert isinstance(again, UnsupportedProtocol) and not again.retryable


def test_an_older_peer_is_told_to_upgrade() -> None:
    with pytest.raises(UnsupportedProtocol, match="older than this process's version 4 by more "
                       "than one; versions 3 and 4 are accepted here: upgrade node n1"):
        require_compatible(2, peer="node n1", ours=4)
    assert supported_versions(4) == [3, 4] and supported_versions(1) == [1]
