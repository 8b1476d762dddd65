"""The operation table (``cluster/ops.py``) is the one source both sides use: the node has a
handler for exactly its ops and checks every key-carrying argument, the client routes and
retries by it, and docs/protocol.md lists every op."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from shardkv.cluster.errors import InvalidArgument, StaleMap
from shardkv.cluster.ops import OPS, WRITE_OPS, ArgKind, spec_of
from shardkv.node.api.node_context import NodeContext
from shardkv.node.api.operations import OPERATIONS, execute

DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_protocol_doc_lists_every_op_and_nothing_else() -> None:
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    assert listed == set(OPS)


def test_the_node_serves_exactly_the_specified_ops() -> None:
    assert set(OPERATIONS) == set(OPS)
    for name, operation in OPERATIONS.items():
        assert operation.writes == OPS[name].writes
        assert operation.allowed == OPS[name].arg_names


def test_writes_are_not_idempotent_unless_their_spec_says_so() -> None:
    assert WRITE_OPS == {"put", "delete", "incr", "expire", "mput", "mdelete", "batch"}
    for name in WRITE_OPS:
        assert not spec_of(name).idempotent, name
        assert {"client_id", "seq", "w"} <= spec_of(name).arg_names


@pytest.mark.parametrize("name", sorted(n for n, s in OPS.items() if s.key_args))
async def test_every_key_argument_is_checked_for_ownership(name: str) -> None:
    """A key named by any key-carrying argument of any op reaches the ownership check."""
    spec = spec_of(name)
    seen: list[bytes] = []

    def owns_key(key: bytes) -> None:
        seen.append(key)
        raise StaleMap("not mine")

    args: dict = {}
    for arg in spec.key_args:
        args[arg.name] = {
            ArgKind.KEY: b"k-" + arg.name.encode(),
            ArgKind.KEYS: [b"k-" + arg.name.encode()],
            ArgKind.ITEMS: [[b"k-" + arg.name.encode(), b"v"]],
            ArgKind.OPS: [{"op": "put", "key": b"k-" + arg.name.encode(), "value": b"v"}],
        }[arg.kind]
    with pytest.raises(StaleMap):
        await execute(NodeContext(owns_key=owns_key), OPERATIONS[name], args)
    assert seen == [b"k-" + spec.key_args[0].name.encode()]


@pytest.mark.parametrize("name", sorted(n for n, s in OPS.items() if s.key_args))
async def test_reserved_keys_are_refused_by_every_op(name: str) -> None:
    arg = spec_of(name).key_args[0]
    reserved = b"\x00shardkv:session:x"
    value = {ArgKind.KEY: reserved, ArgKind.KEYS: [reserved], ArgKind.ITEMS: [[reserved, b"v"]],
             ArgKind.OPS: [{"op": "delete", "key": reserved}]}[arg.kind]
    with pytest.raises(InvalidArgument, match="reserved"):
        await execute(NodeContext(), OPERATIONS[name], {arg.name: value})


def test_keys_of_finds_keys_in_every_shape() -> None:
    assert spec_of("mput").keys_of({"items": [[b"a", b"1"], [b"b", b"2"]]}) == [b"a", b"b"]
    assert spec_of("batch").keys_of({"ops": [{"op": "delete", "key": b"a"}]}) == [b"a"]
    assert spec_of("get").keys_of({"key": b"a"}) == [b"a"]
    assert spec_of("scan").keys_of({"prefix": b"a"}) == []
