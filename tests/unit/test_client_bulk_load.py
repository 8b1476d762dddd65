"""Parsing for `shardkv load` and the value helpers: what gets stored for each input shape,
and which lines are skipped (never half-written)."""

from __future__ import annotations

import io

from shardkv.client import values
from shardkv.client.bulk_load import detect_format, read_records
from shardkv.client.values import DeleteResult, Item


def records(text: str, fmt: str) -> tuple[list, list[str]]:
    problems: list[str] = []
    return list(read_records(io.StringIO(text), fmt, problems)), problems


def test_jsonl_values_text_binary_and_json() -> None:
    got, problems = records(
        '{"key": "a", "value": "text"}\n'
        "\n"
        '{"key": "b", "value": {"b64": "AP8="}}\n'
        '{"key": "c", "value": {"n": [1, 2]}}\n'
        '{"key": "d", "value": 7}\n',
        "jsonl",
    )
    assert got == [("a", b"text"), ("b", b"\x00\xff"), ("c", b'{"n":[1,2]}'), ("d", b"7")]
    assert problems == []


def test_jsonl_bad_lines_are_skipped_and_named() -> None:
    got, problems = records(
        '{"key": "a", "value": "1"}\n'
        "{broken\n"
        '{"value": "no key"}\n'
        '{"key": "", "value": "empty key"}\n'
        '{"key": "b", "value": {"b64": "!!"}}\n'
        '{"key": "z", "value": "2"}\n',
        "jsonl",
    )
    assert got == [("a", b"1"), None, None, None, None, ("z", b"2")]
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 4", "line 5"]


def test_csv_with_and_without_header() -> None:
    got, problems = records('key,value\nk1,v1\n"k,2","v ""2"""\nbad\n', "csv")
    assert got == [("k1", b"v1"), ("k,2", b'v "2"'), None]
    assert problems == ["line 4: expected key,value, got 1 fields"]
    got, _ = records("x,1\ny,2\n", "csv")
    assert got == [("x", b"1"), ("y", b"2")]


def test_format_detection() -> None:
    from pathlib import Path

    assert detect_format(Path("data.CSV"), "auto") == "csv"
    assert detect_format(Path("data.jsonl"), "auto") == "jsonl"
    assert detect_format(Path("data.csv"), "jsonl") == "jsonl"


def test_value_helpers_round_trip() -> None:
    item = Item(values.json({"a": "é"}), 3)
    assert item.json() == {"a": "é"}
    assert Item(values.text("héllo"), 1).text() == "héllo"
    assert Item(values.msgpack({"b": b"\x00"}), 1).msgpack() == {"b": b"\x00"}
    assert Item.from_wire({"value": b"v", "version": 4, "expires_at": None}) == Item(b"v", 4)


def test_delete_result_is_truthy_only_when_something_was_deleted() -> None:
    assert DeleteResult(True, 5)
    assert not DeleteResult(False, 5)
